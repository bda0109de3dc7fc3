"""OME-Zarr metadata from others: the paths it names stay inside its store, and transformations
and pixel types that no image has are refused with one message (exit 2), by ``predict`` and
``evaluate`` alike, before anything is read or written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile_helpers import assert_user_error, changes, invoke, snapshot

from bioim2im.errors import UserError
from bioim2im.io.multiscale import open_levels
from bioim2im.io.omezarr import write_ome_zarr
from tiny_presets import tiny_unet_toml


def _store(path: Path, value: float, zarr_format: int = 2) -> Path:
    write_ome_zarr(
        path,
        np.full((64, 64), value, dtype=np.float32),
        axes="YX",
        voxel_size=(0.5, 0.5),
        zarr_format=zarr_format,  # type: ignore[arg-type]
    )
    return path


def _edit(store: Path, change: Any) -> None:
    """Apply ``change`` to the store's first multiscales entry (NGFF 0.4 or 0.5)."""
    meta = store / ".zattrs"
    if meta.is_file():
        attrs = json.loads(meta.read_text())
        change(attrs["multiscales"][0])
        meta.write_text(json.dumps(attrs))
        return
    meta = store / "zarr.json"
    document = json.loads(meta.read_text())
    change(document["attributes"]["ome"]["multiscales"][0])
    meta.write_text(json.dumps(document))


def _run_both(trained_run: Path, folder: Path, store: Path, truth: Path) -> list[Any]:
    out = folder / "out"
    before = snapshot(folder, trained_run)
    results = [
        invoke("predict", trained_run, "-i", store, "-o", out),
        invoke("evaluate", "--pred", store, "--truth", truth),
    ]
    assert changes(before, snapshot(folder, trained_run)) == []
    return results


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    "escape",
    ["../other.ome.zarr/0", "{other}/0", "0/../../other.ome.zarr/0", "./0", "file:///etc/passwd"],
)
def test_a_dataset_path_outside_the_store_is_refused(
    trained_run: Path, tmp_path: Path, escape: str, zarr_format: int
) -> None:
    other = _store(tmp_path / "other.ome.zarr", 7.0, zarr_format)
    truth = _store(tmp_path / "truth.ome.zarr", 1.0)
    store = _store(tmp_path / "cells.ome.zarr", 0.0, zarr_format)
    path = escape.format(other=other)
    _edit(store, lambda entry: entry["datasets"][0].update(path=path))
    for result in _run_both(trained_run, tmp_path, store, truth):
        assert_user_error(result, "cells.ome.zarr", path, "outside the store")


def test_multiscale_levels_stay_inside_their_store(tmp_path: Path) -> None:
    _store(tmp_path / "other.ome.zarr", 7.0)
    store = _store(tmp_path / "cells.ome.zarr", 0.0)
    _edit(store, lambda entry: entry["datasets"][0].update(path="../other.ome.zarr/0"))
    with pytest.raises(UserError, match=r"cells\.ome\.zarr.*\.\./other\.ome\.zarr/0.*outside"):
        open_levels(store, ndim=2)


def _scale(values: Any) -> Any:
    def change(entry: dict[str, Any]) -> None:
        entry["datasets"][0]["coordinateTransformations"] = [{"type": "scale", "scale": values}]

    return change


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_scale([0.5, 0.5, 0.5]), "3 numbers for the 2 axes"),
        (_scale(["0.5", 0.5]), "finite numbers"),
        (_scale([math.nan, 0.5]), "finite numbers"),
        (_scale([math.inf, 0.5]), "finite numbers"),
        (_scale([[0.5], 0.5]), "finite numbers"),
        (_scale(0.5), "finite numbers"),
        (_scale([0, 0.5]), "above 0"),
        (_scale([-0.5, 0.5]), "above 0"),
        (
            lambda e: e["datasets"][0]["coordinateTransformations"].append(
                {"type": "translation", "translation": ["x", 0]}
            ),
            "translation",
        ),
        (lambda e: e.update(coordinateTransformations={"type": "scale"}), "must be a list"),
        (lambda e: e["datasets"][0].update(coordinateTransformations=["scale"]), "'type'"),
        (lambda e: e.update(axes="yx"), "'axes' must be a list"),
        (lambda e: e["axes"][0].update(unit=5), "'unit' must be a text"),
        (lambda e: e.update(datasets=[0]), "dataset 0"),
        (lambda e: e["datasets"][0].update(path=0), "not a path"),
    ],
)
def test_damaged_transformations_and_axes_give_one_message(
    trained_run: Path, tmp_path: Path, change: Any, named: str
) -> None:
    truth = _store(tmp_path / "truth.ome.zarr", 1.0)
    store = _store(tmp_path / "cells.ome.zarr", 0.0)
    _edit(store, change)
    for result in _run_both(trained_run, tmp_path, store, truth):
        assert_user_error(result, "cells.ome.zarr", "multiscales metadata", named)


def _text_array(path: Path, zarr_format: int) -> None:
    """A zarr array of text (zarr v2's object dtype with a text codec, v3's string)."""
    import zarr

    array = zarr.create_array(
        path, shape=(64, 64), chunks=(64, 64), dtype=str, zarr_format=zarr_format
    )
    array[:] = np.full((64, 64), "x")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_zarr_array_of_text_or_objects_gives_one_message(
    trained_run: Path, tmp_path: Path, zarr_format: int
) -> None:
    truth = _store(tmp_path / "truth.ome.zarr", 1.0)
    store = _store(tmp_path / "cells.ome.zarr", 0.0, zarr_format)
    level = store / "0"
    for name in list(level.iterdir()):
        if name.is_file():
            name.unlink()
        else:
            import shutil

            shutil.rmtree(name)
    level.rmdir()
    _text_array(level, zarr_format)
    plain = tmp_path / "plain.zarr"
    _text_array(plain, zarr_format)
    for source in (store, plain):
        for result in _run_both(trained_run, tmp_path, source, truth):
            assert_user_error(result, source.name, "pixel type", "not supported")


# ---- zarr arrays whose metadata no array can have ----------------------------------------
ZARR_METADATA = {
    "zero chunks": '"chunks": [0, 0], "fill_value": null',
    "empty fill value": '"chunks": [64, 64], "fill_value": ""',
}


@pytest.mark.parametrize("damage", list(ZARR_METADATA))
@pytest.mark.parametrize("command", ["check", "predict"])
def test_a_zarr_array_with_broken_metadata(
    damage: str, command: str, trained_run: Path, data_copy: Path, tmp_path: Path
) -> None:
    """zarr raises ZeroDivisionError / TypeError while opening or reading these."""
    image = data_copy / "IM" / "img_003.zarr"
    image.mkdir()
    (image / ".zarray").write_text(
        '{"zarr_format": 2, "shape": [64, 64], "dtype": "<f4", "compressor": null, '
        f'"order": "C", "filters": null, {ZARR_METADATA[damage]}}}',
        encoding="utf-8",
    )
    (data_copy / "IM" / "img_003.tif").unlink()
    if command == "check":
        preset = tmp_path / "tiny.toml"
        preset.write_text(tiny_unet_toml(data_copy), encoding="utf-8")
        result = invoke("check", "--data", preset)
    else:
        result = invoke("predict", trained_run, "-i", image, "-o", tmp_path / "out")
    assert_user_error(result, "img_003.zarr")
