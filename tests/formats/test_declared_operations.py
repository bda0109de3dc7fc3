"""Export writes a normaliser's and a postprocessor's bioimage.io operations from what each
component declares at registration (the ``bioimageio`` extra), never from their names: a
plugin's components export like the built-ins."""

from __future__ import annotations

import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bioim2im import api, hookimpl


class Times:
    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return (image * self.factor).astype(np.float32)


def times(*, factor: float = 2.0) -> Any:
    """Multiply the image by a factor (a test normaliser)."""
    return Times(factor)


def clamp(*, high: float = 0.9) -> Any:
    """Clip values above `high` (a test postprocessor)."""
    return lambda array: np.minimum(array, np.float32(high))


def _plugin(declare: bool) -> types.ModuleType:
    plugin = types.ModuleType("bioim2im_declares")
    extras_norm: dict[str, Any] = {}
    extras_post: dict[str, Any] = {}
    if declare:
        extras_norm["bioimageio"] = lambda params, axes: [
            {"id": "scale_linear", "kwargs": {"gain": params["factor"], "offset": 0.0}}
        ]
        extras_post["bioimageio"] = lambda params, axes: [
            {"id": "clip", "kwargs": {"min": -1e30, "max": params["high"]}}
        ]

    @hookimpl
    def bioim2im_register_transforms(registry):
        registry.add("times", times, role="normalize", **extras_norm)

    @hookimpl
    def bioim2im_register_postprocessors(registry):
        registry.add("clamp", clamp, pointwise=True, **extras_post)

    plugin.bioim2im_register_transforms = bioim2im_register_transforms  # type: ignore[attr-defined]
    plugin.bioim2im_register_postprocessors = bioim2im_register_postprocessors  # type: ignore[attr-defined]
    return plugin


@pytest.fixture
def with_plugin(monkeypatch: pytest.MonkeyPatch):
    from bioim2im.plugin import manager

    def install(declare: bool) -> None:
        registry = manager.build_registry(
            [*manager.discover(), (_plugin(declare), "bioim2im-declares", "1")]
        )
        monkeypatch.setattr(manager, "get_registry", lambda: registry)

    return install


OVERRIDES = [
    'data.normalize={name = "times", factor = 0.5}',
    'model.heads.prob.postprocess=[{name = "sigmoid"}, {name = "clamp", high = 0.75}]',
]


def test_a_plugin_normaliser_and_postprocessor_export_with_their_declared_operations(
    trained_run: Path, tmp_path: Path, with_plugin
) -> None:
    from bioimageio.core import test_model

    from bioim2im.formats.bioimageio.calls import bioimageio_calls

    with_plugin(declare=True)
    out = api.export(trained_run, "bioimageio", output=tmp_path / "m.zip", overrides=OVERRIDES)
    with zipfile.ZipFile(out.path) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    pre = rdf["inputs"][0]["preprocessing"]
    assert {"id": "scale_linear", "kwargs": {"gain": 0.5, "offset": 0.0}} in pre
    post = next(o for o in rdf["outputs"] if o["id"] == "prob")["postprocessing"]
    assert [op["id"] for op in post][:2] == ["sigmoid", "clip"]
    assert post[1]["kwargs"]["max"] == 0.75
    with bioimageio_calls():
        summary = test_model(out.path)
    assert summary.status == "passed", summary.format()


def test_a_normaliser_that_declares_no_operation_is_refused_with_the_way_out(
    trained_run: Path, tmp_path: Path, with_plugin
) -> None:
    from bioim2im.errors import UserError

    with_plugin(declare=False)
    with pytest.raises(UserError, match=r"data\.normalize 'times' has no bioimage\.io equivalent"):
        api.export(trained_run, "bioimageio", output=tmp_path / "m.zip", overrides=OVERRIDES)
    assert not (tmp_path / "m.zip").exists()
