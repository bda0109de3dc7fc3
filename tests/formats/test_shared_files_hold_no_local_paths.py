"""What export writes for others to use carries no local paths and no experiment trackers
(issue 28): the preset attached to a package, and the one inside a TorchScript or ONNX file,
leave out data.path, data.val_path, data.cache_dir, train.init_from and the loggers (whose
settings hold tracking URIs and credentials); predicting from them needs none of these."""

from __future__ import annotations

import io
import json
import sys
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from bioim2im import api

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECRET = "http://ada:s3cret@tracker.example.org:5000"


def tracker(*, run_dir: Path, preset: dict[str, Any], start_step: int, tracking_uri: str) -> Any:
    raise AssertionError("export never opens a tracker")


@pytest.fixture
def with_tracker(monkeypatch: pytest.MonkeyPatch) -> None:
    from bioim2im.plugin import manager
    from bioim2im.plugin.hookspecs import hookimpl

    plugin = types.ModuleType("bioim2im_tracker")

    @hookimpl
    def bioim2im_register_loggers(registry: Any) -> None:
        registry.add("tracker", tracker)

    plugin.bioim2im_register_loggers = bioim2im_register_loggers  # type: ignore[attr-defined]
    registry = manager.build_registry([*manager.discover(), (plugin, "bioim2im-tracker", "1")])
    monkeypatch.setattr(manager, "get_registry", lambda: registry)


@pytest.fixture
def checkpoint(trained_run: Path, tmp_path: Path, with_tracker: None) -> tuple[Path, str]:
    """The trained run's checkpoint with a preset naming a tracker, a start checkpoint, a
    validation folder and a cache folder, all local; and the data folder it names."""
    from bioim2im.config import toml_out
    from bioim2im.model.checkpoint import save_checkpoint

    state = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)
    preset = tomllib.loads(state["preset"])
    data_path = preset["data"]["path"]
    preset["data"]["val_path"] = data_path
    preset["data"]["cache_dir"] = "/home/ada/cache"
    preset["train"]["init_from"] = "/home/ada/runs/earlier"
    preset["logging"]["loggers"] = [{"name": "tracker", "tracking_uri": SECRET}]
    state["preset"] = toml_out.dumps(preset)
    path = tmp_path / "ckpt" / "best.pt"
    path.parent.mkdir()
    save_checkpoint(state, path)
    return path, data_path


def assert_nothing_local(text: str, data_path: str) -> None:
    for local in (data_path, "s3cret", "tracker.example.org", "/home/ada", "tracker"):
        assert local not in text, f"{local!r} left in\n{text}"


def test_exported_presets_carry_no_local_paths_or_trackers(
    checkpoint: tuple[Path, str], tmp_path: Path
) -> None:
    path, data_path = checkpoint
    test_image = (
        Path(data_path) / "IM" / sorted(p.name for p in (Path(data_path) / "IM").iterdir())[0]
    )
    package = api.export(path, "bioimageio", output=tmp_path / "m.zip", test_image=test_image).path
    with zipfile.ZipFile(package) as archive:
        attached = archive.read("preset.toml").decode()
        rdf = archive.read("rdf.yaml").decode()
        scripted = archive.read("weights_torchscript.pt")
    assert_nothing_local(attached, data_path)
    assert_nothing_local(rdf, data_path)
    assert tomllib.loads(attached)["model"]["heads"]  # what prediction needs is there
    script = api.export(path, "torchscript", output=tmp_path / "m.pt").path
    extra = {"bioim2im.json": ""}
    with warnings.catch_warnings():  # TorchScript is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.load(io.BytesIO(script.read_bytes()), _extra_files=extra)
    assert_nothing_local(json.loads(extra["bioim2im.json"])["preset"], data_path)
    assert_nothing_local(scripted.decode("latin-1"), data_path)
    graph = api.export(path, "onnx", output=tmp_path / "m.onnx").path
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(graph)).metadata_props}
    assert_nothing_local(json.loads(metadata["bioim2im.json"])["preset"], data_path)


def test_predicting_from_them_needs_none_of_it(
    checkpoint: tuple[Path, str], tmp_path: Path
) -> None:
    import numpy as np

    path, data_path = checkpoint
    image = np.random.default_rng(0).random((48, 48)).astype(np.float32)
    expected = api.predict(path, image, device="cpu")
    test_image = next((Path(data_path) / "IM").iterdir())
    package = api.export(path, "bioimageio", output=tmp_path / "m.zip", test_image=test_image).path
    script = api.export(path, "torchscript", output=tmp_path / "m.pt").path
    with zipfile.ZipFile(package) as archive:
        halo = yaml.safe_load(archive.read("rdf.yaml"))["config"]["bioim2im"]["halo"]
    # A package tiles as bioimageio.core does, with its halo; the checkpoint does when asked.
    tiled = api.predict(path, image, device="cpu", overrides=[f"predict.halo={halo}"])
    for model, wanted in ((package, tiled), (script, expected)):
        found = api.predict(model, image, device="cpu", overrides=["predict.backend=torch"])
        for head, array in wanted.items():
            np.testing.assert_allclose(found[head], array, atol=1e-4)
