"""A third party's data layout (kind ``layout``): named by ``data.layout`` with its parameters,
it serves ``check --data``, the training datasets and the image files export and
``validation_images`` ask for, and refuses presets it cannot train before training."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bioim2im import hookimpl
from bioim2im.config.components import components
from bioim2im.config.loading import load_preset, to_toml, validate
from bioim2im.config.reference import json_schema
from bioim2im.errors import UserError
from bioim2im.model.network import components_used
from bioim2im.plugin.manager import build_registry, discover


class TileData:
    """Random tiles and their thresholded masks: item ``i`` a pure function of (seed, i)."""

    def __init__(self, count: int, size: list[int], seed: int) -> None:
        self.count, self.size, self.seed = count, size, seed

    def __len__(self) -> int:
        return self.count

    def epoch_length(self, batch_size: int) -> int:
        return max(1, self.count // batch_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        image = np.random.default_rng([self.seed, index]).random((1, *self.size), np.float32)
        return {
            "image": torch.from_numpy(image),
            "target/seg": torch.from_numpy((image > 0.5).astype(np.float32)),
        }


class Tiles:
    """The layout object: what bioim2im asks of a layout."""

    def __init__(self, count: int, table: Path | None) -> None:
        self.count, self.table = count, table

    def preflight(self, preset: Any, *, registry: Any, run_dir: Any = None, scan: bool = True):
        from bioim2im.data.preflight import Report

        report = Report(preset.data.path, "tiles")
        report.pairs["train"] = report.entries["train"] = self.count
        if self.count > 99:
            report.problems.append(f"{self.count} tiles are too many")
        return report

    def datasets(self, preset: Any, run_dir: Any = None, *, registry: Any, check: bool = True):
        return TileData(self.count, preset.data.patch_size, preset.train.seed), None

    def image_pairs(self, preset: Any, *, registry: Any):
        raise UserError("tiles are not image files")


def tiles(*, count: int = 4, table: Path | None = None) -> Tiles:
    """Random tiles (a test layout).

    Args:
        count: How many tiles.
        table: A file naming the tiles.
    """
    return Tiles(count, table)


def check_tiles(preset: Any, params: dict[str, Any]) -> None:
    if len(preset.model.heads) != 1:
        raise ValueError(f"data.layout 'tiles' trains one head, got {list(preset.model.heads)}")


def _plugin() -> types.ModuleType:
    plugin = types.ModuleType("bioim2im_tiles")

    @hookimpl
    def bioim2im_register_layouts(registry):
        registry.add("tiles", tiles, check_preset=check_tiles)

    plugin.bioim2im_register_layouts = bioim2im_register_layouts  # type: ignore[attr-defined]
    return plugin


@pytest.fixture(scope="module")
def registry() -> Any:
    return build_registry([*discover(), (_plugin(), "bioim2im-tiles", "0.3")])


HEAD = {"name": "conv", "loss": {"name": "bce"}}


def _table(layout: Any, **heads: Any) -> dict[str, Any]:
    return {
        "data": {"path": "tiles.csv", "patch_size": [16, 16], "batch_size": 2, "layout": layout},
        "model": {
            "features": 4,
            "backbone": {"name": "unet", "channels": [4, 8], "strides": [2]},
            "heads": heads or {"seg": HEAD},
        },
    }


def test_the_built_in_layouts_are_registered_like_a_plugins() -> None:
    registry = build_registry(discover())
    found = {c.name: c.package for c in registry if c.kind == "layout"}
    assert {"auto", "folders", "pairs", "csv"} <= set(found)
    assert {found[name] for name in ("auto", "folders", "pairs", "csv")} == {"bioim2im"}


def test_a_plugin_layout_serves_check_data_and_the_training_datasets(registry: Any) -> None:
    from bioim2im.data.datasets import training_datasets
    from bioim2im.data.preflight import preflight

    preset = validate(_table({"name": "tiles", "count": 6}), registry, "test")
    assert preset.data.layout.params() == {"count": 6, "table": None}
    report = preflight(preset, registry=registry)
    assert (report.layout, report.pairs, report.problems) == ("tiles", {"train": 6}, [])
    train, val = training_datasets(preset, registry=registry)
    assert isinstance(train, TileData) and (len(train), val) == (6, None)
    # Where it sits is walked like every component: checkpoints record its package.
    assert ("data.layout", "layout", "tiles") in [
        (c.key, c.kind, c.spec.name) for c in components(preset)
    ]
    assert components_used(preset, registry)["bioim2im-tiles"] == "0.3"


def test_a_plugin_layout_trains(
    registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bioim2im import api
    from bioim2im.plugin import manager

    monkeypatch.setattr(manager, "get_registry", lambda: registry)
    preset = tmp_path / "tiles.toml"
    preset.write_text(
        '[data]\npath = "tiles.csv"\npatch_size = [16, 16]\nbatch_size = 2\nnum_workers = 0\n'
        'layout = { name = "tiles", count = 4 }\n'
        "[model]\nfeatures = 4\n"
        '[model.backbone]\nname = "unet"\nchannels = [4, 8]\nstrides = [2]\n'
        '[model.heads.seg]\nname = "conv"\nloss = { name = "bce" }\n'
        "[train]\nsteps = 2\nval_every = 100\ncheckpoint_every = 2\n"
        '[logging]\nsnapshots = false\nprogress = "lines"\n',
        encoding="utf-8",
    )
    result = api.train(preset, run_dir=tmp_path / "run")
    assert result.step == 2
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    with pytest.raises(UserError, match=r"run: tiles are not image files"):
        api.validation_images(tmp_path / "run")


def test_the_layouts_rules_refuse_a_preset_before_training(registry: Any) -> None:
    table = _table({"name": "tiles"}, seg=HEAD, other=HEAD)
    with pytest.raises(
        UserError, match=r"data.layout 'tiles' trains one head, got \['seg', 'other'\]"
    ):
        validate(table, registry, "test")
    with pytest.raises(UserError, match=r"data.layout.rows"):
        validate(_table({"name": "tiles", "rows": 3}), registry, "test")


def test_a_layout_name_alone_stands_for_its_table(
    registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "base.toml"
    base.write_text(
        '[data]\npatch_size = [16, 16]\n[data.layout]\nname = "tiles"\ncount = 5\n'
        '[model.backbone]\nname = "unet"\n[model.heads.seg]\nname = "conv"\n'
        'loss = { name = "bce" }\n',
        encoding="utf-8",
    )
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[data]\nlayout = "tiles"\n', encoding="utf-8")
    assert load_preset(child, registry=registry).data.layout.params()["count"] == 5
    folders = load_preset(child, ["data.layout=folders"], registry=registry)
    assert folders.data.layout.name == "folders" and folders.data.layout.params() == {}
    assert 'layout = "folders"\n' in to_toml(folders)
    assert '[data.layout]\nname = "tiles"\ncount = 5\n' in to_toml(
        load_preset(base, registry=registry)
    )
    schema = json_schema(registry)["$defs"]["DataConfig"]["properties"]["layout"]
    assert {"type": "string", "enum": registry.names("layout")} in schema["anyOf"]
    assert "tiles" in registry.names("layout")


def test_a_layout_path_parameter_is_relative_to_the_preset_that_sets_it(
    registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    base = tmp_path / "a" / "base.toml"
    base.write_text(
        '[data]\npatch_size = [16, 16]\nlayout = { name = "tiles", table = "t.csv" }\n'
        '[model.backbone]\nname = "unet"\n[model.heads.seg]\nname = "conv"\n'
        'loss = { name = "bce" }\n',
        encoding="utf-8",
    )
    assert load_preset(base, registry=registry).data.layout.params()["table"] == (
        tmp_path / "a" / "t.csv"
    )
    child = tmp_path / "b" / "child.toml"
    child.write_text(
        'extends = "../a/base.toml"\n[data.layout]\ntable = "u.csv"\n', encoding="utf-8"
    )
    assert load_preset(child, registry=registry).data.layout.params()["table"] == (
        tmp_path / "b" / "u.csv"
    )
    monkeypatch.chdir(tmp_path)
    given = load_preset(child, ["data.layout.table=v.csv"], registry=registry)
    assert given.data.layout.params()["table"] == tmp_path / "v.csv"
    # What export shares leaves it out, as it leaves out data.path.
    from bioim2im.config.loading import local_path_keys

    dumped = json.loads(given.model_dump_json())
    assert ("data", "layout", "table") in local_path_keys(dumped, registry)


def test_export_asks_the_layout_for_its_test_image(registry: Any, tmp_path: Path) -> None:
    from bioim2im.formats.export.source import test_image

    (tmp_path / "tiles.csv").write_text("tile\n", encoding="utf-8")
    table = _table({"name": "tiles"})
    table["data"]["path"] = str(tmp_path / "tiles.csv")
    preset = validate(table, registry, "test")
    source = types.SimpleNamespace(model=types.SimpleNamespace(preset=preset, registry=registry))
    with pytest.raises(UserError, match=r"tiles are not image files: give an image .*--test-image"):
        test_image(source, None)  # type: ignore[arg-type]
