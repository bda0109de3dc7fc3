"""What `predict --crops` writes: an output `pack` accepts, replaced by `--overwrite` only when an
earlier `predict --crops` wrote it, never a folder of the user's or one of the command's inputs;
every crop and class written once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import zarr
from stores import PRESETS, datasplit_text, manifest_text
from tiny_runs import shortest_training

from bioim2im.errors import UserError
from bioim2im_cellmap.grids import Grid

PRESET = PRESETS / "cellmap-3d.toml"
RAW = "{root}/data/{{dataset}}/{{dataset}}.zarr/recon-1/em/fibsem-uint8"
ROWS = [
    (21, "jrc_alpha", "mito", (8.0, 8.0, 8.0), (100.0, 92.0, 60.0), (6, 8, 8)),
    (21, "jrc_alpha", "er", (8.0, 8.0, 8.0), (100.0, 92.0, 60.0), (6, 8, 8)),
    (22, "jrc_beta", "nuc", (4.0, 4.0, 4.0), (150.0, 62.0, 90.0), (8, 8, 8)),
]


@pytest.fixture(scope="module")
def model(cellmap_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bioim2im.api import train

    root = tmp_path_factory.mktemp("crops-model")
    datasplit = root / "datasplit.csv"
    # Validated on the one crop annotating every class (force_all_classes = "validate").
    datasplit.write_text(
        datasplit_text(cellmap_root / "data", {1: "validate", 3: "train", 4: "train"})
    )
    overrides = [
        f"data.path={datasplit}",
        'data.layout.classes=["mito", "nuc", "er"]',
        *shortest_training(2),
    ]
    train(PRESET, overrides=overrides, run_dir=root / "run")
    return root / "run"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "test_crop_manifest.csv"
    path.write_text(manifest_text(ROWS))
    return path


def test_overwrite_replaces_an_earlier_output_of_predict_crops(
    model: Path, manifest: Path, cellmap_root: Path, tmp_path: Path, cli
):
    output = tmp_path / "predictions.zarr"
    command = (
        "cellmap",
        "predict",
        model,
        "--crops",
        manifest,
        "--raw",
        RAW.format(root=cellmap_root),
    )
    assert cli(*command, "-o", output).code == 0
    (output / "crop21" / "mito" / ".zattrs").write_text("{}")  # made unusable

    again = cli(*command, "-o", output)
    assert again.code == 2 and "pass --overwrite" in again.err, again.err
    replaced = cli(*command, "-o", output, "--overwrite")
    assert replaced.code == 0, replaced.err
    assert zarr.open_group(output, mode="r")["crop21/mito"].attrs["voxel_size"] == [8.0] * 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # What it wrote, `pack` takes.
    packed = cli("cellmap", "pack", output, "--crops", manifest, "-o", tmp_path / "submission.zip")
    assert packed.code == 0, packed.err


def test_overwrite_never_replaces_what_predict_crops_did_not_write(
    model: Path, manifest: Path, cellmap_root: Path, tmp_path: Path, cli
):
    raw = RAW.format(root=cellmap_root)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    store = cellmap_root / "data" / "jrc_alpha" / "jrc_alpha.zarr"
    before = {
        path: sorted(p.relative_to(path) for p in path.rglob("*")) if path.is_dir() else None
        for path in (mine, store)
    }
    manifest_bytes = manifest.read_bytes()
    for output in (mine, store, manifest):
        result = cli(
            "cellmap",
            "predict",
            model,
            "--crops",
            manifest,
            "--raw",
            raw,
            "-o",
            output,
            "--overwrite",
        )
        assert result.code == 2, result.err
        assert "not one; nothing was changed" in result.err, result.err
        assert "Traceback" not in result.err
    assert (mine / "notes.txt").read_text() == "keep me"
    for path, listing in before.items():
        assert sorted(p.relative_to(path) for p in path.rglob("*")) == listing
    assert manifest.read_bytes() == manifest_bytes


def test_every_crop_and_class_is_written_once_with_finite_grid_attributes(
    model: Path, manifest: Path, cellmap_root: Path, tmp_path: Path, cli
):
    output = tmp_path / "p.zarr"
    result = cli(
        "cellmap",
        "predict",
        model,
        "--crops",
        manifest,
        "--raw",
        RAW.format(root=cellmap_root),
        "-o",
        output,
    )
    assert result.code == 0, result.err
    for crop, _, name, scale, translation, shape in ROWS:
        attributes = json.loads((output / f"crop{crop}" / name / ".zattrs").read_text())
        assert attributes == {
            "voxel_size": list(scale),
            "translation": list(translation),
            "shape": list(shape),
        }

    duplicated = tmp_path / "duplicated.csv"
    duplicated.write_text(manifest_text([*ROWS, ROWS[1]]))
    result = cli(
        "cellmap",
        "predict",
        model,
        "--crops",
        duplicated,
        "--raw",
        RAW.format(root=cellmap_root),
        "-o",
        tmp_path / "d.zarr",
    )
    assert result.code == 2 and "line 5" in result.err and "listed twice" in result.err
    assert not (tmp_path / "d.zarr").exists()


@pytest.mark.parametrize(
    ("voxel_size", "translation", "shape"),
    [
        ((math.nan, 8.0, 8.0), (0.0, 0.0, 0.0), (4, 4, 4)),
        ((8.0, 8.0, 0.0), (0.0, 0.0, 0.0), (4, 4, 4)),
        ((8.0, 8.0, 8.0), (0.0, math.inf, 0.0), (4, 4, 4)),
        ((8.0, 8.0, 8.0), (0.0, 0.0, 0.0), (4, 0, 4)),
        ((8.0, 8.0), (0.0, 0.0, 0.0), (4, 4, 4)),
    ],
)
def test_a_crop_grid_is_finite_and_positive(voxel_size, translation, shape):
    with pytest.raises(UserError, match="not a crop grid"):
        Grid(voxel_size, translation, shape)


def test_only_predicts_the_crops_it_names(
    model: Path, manifest: Path, cellmap_root: Path, tmp_path: Path, cli
):
    output = tmp_path / "some.zarr"
    command = ("cellmap", "predict", model, "--crops", manifest, "--raw")
    result = cli(*command, RAW.format(root=cellmap_root), "-o", output, "--only", "crop22")
    assert result.code == 0, result.err
    group = zarr.open_group(output, mode="r")
    assert sorted(name for name, _ in group.groups()) == ["crop22"]
    bad = cli(*command, RAW.format(root=cellmap_root), "-o", tmp_path / "b.zarr", "--only", "5")
    assert bad.code == 2 and "--only '5': not a crop of" in bad.err and "21, 22" in bad.err
    assert not (tmp_path / "b.zarr").exists()
