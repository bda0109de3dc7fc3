"""`bioim2im cellmap pack`: the submission zip is written on the crops' grids, and every malformed
submission is refused with a message naming the crop, the class and what is wrong."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from stores import manifest_text, write_array, write_multiscale

# crop1: mito (instance) and er (semantic) at 8 nm; crop2: er at 4 nm.
GRIDS = {
    1: ((8.0, 8.0, 8.0), (4.0, 4.0, 4.0), (4, 6, 6)),
    2: ((4.0, 4.0, 4.0), (102.0, 2.0, 2.0), (3, 5, 5)),
}
ROWS = [(1, "jrc_alpha", "mito"), (1, "jrc_alpha", "er"), (2, "jrc_beta", "er")]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "test_crop_manifest.csv"
    path.write_text(manifest_text([(c, d, n, *GRIDS[c]) for c, d, n in ROWS]))
    return path


def labels(crop: int, name: str) -> np.ndarray:
    shape = GRIDS[crop][2]
    rng = np.random.default_rng(crop)
    if name == "mito":
        values = np.zeros(shape, dtype=np.uint16)
        values[1:3, 1:4, 1:3] = 3
        values[0, 4:, 4:] = 8
        return values
    return (rng.random(shape) > 0.5).astype(np.uint8)


def predictions(path: Path, change: Callable[[zarr.Group], None] | None = None) -> Path:
    """A zarr group of crop<N>/<class> arrays on the crops' grids (then ``change`` applied)."""
    group = zarr.open_group(path, mode="w", zarr_format=2)
    for crop, _, name in ROWS:
        scale, translation, _ = GRIDS[crop]
        write_array(
            group.require_group(f"crop{crop}"),
            name,
            labels(crop, name),
            voxel_size=list(scale),
            translation=list(translation),
        )
    if change is not None:
        change(group)
    return path


def zipped(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as out:
        for root, _, files in os.walk(folder):
            for name in files:
                path = Path(root, name)
                out.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def test_pack_writes_a_valid_submission(tmp_path: Path, manifest: Path, cli):
    source = predictions(tmp_path / "predictions.zarr")
    output = tmp_path / "out" / "submission.zip"
    result = cli("cellmap", "pack", source, "--crops", manifest, "-o", output)
    assert result.code == 0, result.err
    assert cli("cellmap", "pack", output, "--crops", manifest, "--check").code == 0
    with zipfile.ZipFile(output) as archive:
        names = set(archive.namelist())
        assert {".zgroup", "crop1/.zgroup", "crop1/mito/.zarray", "crop1/mito/.zattrs"} <= names
        archive.extractall(tmp_path / "unzipped")
    group = zarr.open_group(tmp_path / "unzipped", mode="r")
    for crop, _, name in ROWS:
        array = group[f"crop{crop}/{name}"]
        np.testing.assert_array_equal(array[...] > 0, labels(crop, name) > 0)
        assert array.attrs["voxel_size"] == list(GRIDS[crop][0])
        assert array.attrs["translation"] == list(GRIDS[crop][1])
        assert array.dtype == (np.uint32 if name == "mito" else np.uint8)
    np.testing.assert_array_equal(group["crop1/mito"][...], labels(1, "mito"))
    again = cli("cellmap", "pack", source, "--crops", manifest, "-o", output)
    assert again.code == 2 and "--overwrite" in again.err
    assert [p.name for p in output.parent.iterdir()] == ["submission.zip"]


def test_pack_resamples_predictions_to_the_crop_grid(tmp_path: Path, manifest: Path, cli):
    def finer(group: zarr.Group) -> None:
        # crop2/er predicted at 2 nm, probabilities: linear onto 4 nm, then > 0.5.
        del group["crop2/er"]
        fine = labels(2, "er").astype(np.float32).repeat(2, 0).repeat(2, 1).repeat(2, 2) * 0.9
        write_array(group["crop2"], "er", fine, voxel_size=[2, 2, 2], translation=[101.0, 1.0, 1.0])

    output = tmp_path / "s.zip"
    result = cli(
        "cellmap",
        "pack",
        predictions(tmp_path / "p.zarr", finer),
        "--crops",
        manifest,
        "-o",
        output,
    )
    assert result.code == 0, result.err
    with zipfile.ZipFile(output) as archive:
        archive.extractall(tmp_path / "u")
    packed = zarr.open_group(tmp_path / "u", mode="r")["crop2/er"]
    assert packed.shape == (3, 5, 5)
    np.testing.assert_array_equal(packed[...], labels(2, "er"))


def _drop(path: str) -> Callable[[zarr.Group], None]:
    def change(group: zarr.Group) -> None:
        del group[path]

    return change


def _replace(path: str, values: np.ndarray, **attrs: object) -> Callable[[zarr.Group], None]:
    def change(group: zarr.Group) -> None:
        crop, name = path.split("/")
        old = dict(group[path].attrs)
        del group[path]
        write_array(group[crop], name, values, **{**old, **attrs})

    return change


def _attrs(path: str, **attrs: object) -> Callable[[zarr.Group], None]:
    def change(group: zarr.Group) -> None:
        array = group[path]
        kept = {k: v for k, v in array.attrs.items() if k not in attrs}
        array.attrs.clear()
        array.attrs.update({**kept, **{k: v for k, v in attrs.items() if v is not None}})

    return change


def _multiscale(path: str) -> Callable[[zarr.Group], None]:
    def change(group: zarr.Group) -> None:
        crop = path.split("/")[0]
        scale, translation, _ = GRIDS[int(crop.removeprefix("crop"))]
        values = group[path][...]
        del group[path]
        write_multiscale(Path(str(group.store.root)) / path, [(values, scale, translation)])

    return change


MALFORMED = {
    "multiscale group": (
        _multiscale("crop1/mito"),
        "crop1/mito: an OME-NGFF multiscale group, not an array: the challenge's evaluation "
        "reads only Zarr-2 arrays, so this class would score as missing",
    ),
    "missing crop": (_drop("crop2"), "crop2: missing (its classes: er)"),
    "missing class": (_drop("crop1/er"), "crop1/er: missing"),
    "wrong shape": (
        _replace("crop1/mito", np.zeros((4, 6, 5), np.uint16)),
        "crop1/mito: shape [4, 6, 5], but the crop is [4, 6, 6]",
    ),
    "wrong scale": (
        _attrs("crop1/er", voxel_size=[4.0, 8.0, 8.0]),
        "crop1/er: voxel size [4.0, 8.0, 8.0] nm, but the crop's is [8.0, 8.0, 8.0] nm",
    ),
    "wrong translation": (
        _attrs("crop2/er", translation=[100.0, 2.0, 2.0]),
        "crop2/er: translation [100.0, 2.0, 2.0] nm, but the crop's is [102.0, 2.0, 2.0] nm",
    ),
    "no scale": (
        _attrs("crop2/er", voxel_size=None),
        "crop2/er: no voxel_size attribute (the crop's is [4.0, 4.0, 4.0] nm)",
    ),
    "float semantic": (
        _replace("crop2/er", np.full((3, 5, 5), 0.3, np.float32)),
        "crop2/er: dtype float32: the evaluation counts every value > 0 as foreground",
    ),
    "float instance": (
        _replace("crop1/mito", np.zeros((4, 6, 6), np.float64)),
        "crop1/mito: dtype float64: instance classes need integer ids",
    ),
    "negative labels": (
        _replace("crop1/mito", np.full((4, 6, 6), -1, np.int16)),
        "crop1/mito: negative labels",
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_check_names_each_problem(case: str, tmp_path: Path, manifest: Path, cli):
    change, message = MALFORMED[case]
    archive = zipped(predictions(tmp_path / "p.zarr", change), tmp_path / "s.zip")
    result = cli("cellmap", "pack", archive, "--crops", manifest, "--check")
    assert result.code == 2, result.err
    assert message in result.err, result.err
    assert (
        "1 problem" in result.err and "FAILED" not in result.err and "Traceback" not in result.err
    )


def test_check_names_problems_of_the_zip_itself(tmp_path: Path, manifest: Path, cli):
    source = predictions(tmp_path / "p.zarr")
    # `zip -r submission.zip submission.zarr` (the challenge's documented layout) is valid.
    nested = zipped(source, tmp_path / "nested.zip", prefix="submission.zarr/")
    result = cli("cellmap", "pack", nested, "--crops", manifest, "--check")
    assert result.code == 0, result.err
    cases = {
        "not a zip": (tmp_path / "p.zarr" / ".zgroup", "not a zip file"),
    }
    v3 = zarr.open_group(tmp_path / "v3.zarr", mode="w", zarr_format=3)
    v3.create_array("x", shape=(1,), dtype="uint8")
    cases["zarr 3"] = (zipped(tmp_path / "v3.zarr", tmp_path / "v3.zip"), "Zarr-3")
    broken = tmp_path / "broken.zarr"
    shutil.copytree(source, broken)
    chunk = next(p for p in (broken / "crop1" / "mito").iterdir() if not p.name.startswith("."))
    chunk.write_bytes(b"not a chunk")
    cases["corrupt chunk"] = (
        zipped(broken, tmp_path / "broken.zip"),
        "crop1/mito: unreadable data",
    )
    for name, (archive, message) in cases.items():
        result = cli("cellmap", "pack", archive, "--crops", manifest, "--check")
        assert result.code == 2, (name, result.err)
        assert message in result.err, (name, result.err)


def test_pack_refuses_predictions_it_cannot_place(tmp_path: Path, manifest: Path, cli):
    def floating(group: zarr.Group) -> None:
        del group["crop1/mito"]
        write_array(
            group["crop1"],
            "mito",
            np.zeros((4, 6, 6), np.float32),
            voxel_size=[8, 8, 8],
            translation=[4, 4, 4],
        )

    output = tmp_path / "s.zip"
    for change, message in (
        (floating, "holds floating-point values (float32) but mito is scored as instances"),
        (_drop("crop2"), "crop2: missing from"),
    ):
        source = predictions(tmp_path / "p.zarr", change)
        result = cli("cellmap", "pack", source, "--crops", manifest, "-o", output)
        assert result.code == 2, result.err
        assert message in result.err, result.err
        assert "no submission written" in result.err
        assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_pack_pads_predictions_that_cover_part_of_a_crop_and_says_so(
    tmp_path: Path, manifest: Path, cli
):
    def half(group: zarr.Group) -> None:
        # crop1/mito predicted over its first two planes only, with ids above 255.
        del group["crop1/mito"]
        values = labels(1, "mito")[:2].astype(np.uint16)
        values[0, 0, 0] = 1000
        write_array(group["crop1"], "mito", values, voxel_size=[8, 8, 8], translation=[4, 4, 4])

    output = tmp_path / "s.zip"
    result = cli(
        "cellmap", "pack", predictions(tmp_path / "p.zarr", half), "--crops", manifest, "-o", output
    )
    assert result.code == 0, result.err
    assert "warning crop1/mito: covers only part of the crop" in result.err
    with zipfile.ZipFile(output) as archive:
        archive.extractall(tmp_path / "u")
    packed = zarr.open_group(tmp_path / "u", mode="r")["crop1/mito"][...]
    expected = labels(1, "mito").astype(np.uint32)
    expected[2:] = 0
    expected[0, 0, 0] = 1000  # ids above 255 are kept (the toolbox's packer wraps them)
    np.testing.assert_array_equal(packed, expected)


def test_pack_fills_dataset_and_crop_into_a_path(tmp_path: Path, manifest: Path, cli):
    source = predictions(tmp_path / "p.zarr")
    # The toolbox's layout: one store per dataset, crop<N> groups in it.
    for crop, dataset, _ in ROWS:
        target = tmp_path / "processed" / f"{dataset}.zarr" / f"crop{crop}"
        if not target.exists():
            shutil.copytree(source / f"crop{crop}", target)
    template = f"{tmp_path}/processed/{{dataset}}.zarr/{{crop}}"
    output = tmp_path / "s.zip"
    result = cli("cellmap", "pack", template, "--crops", manifest, "-o", output)
    assert result.code == 0, result.err
    with zipfile.ZipFile(output) as archive:
        archive.extractall(tmp_path / "u")
    group = zarr.open_group(tmp_path / "u", mode="r")
    for crop, _, name in ROWS:
        np.testing.assert_array_equal(group[f"crop{crop}/{name}"][...] > 0, labels(crop, name) > 0)
    missing = cli("cellmap", "pack", f"{tmp_path}/nowhere/{{crop}}", "--crops", manifest, "-o",
                  tmp_path / "t.zip")  # fmt: skip
    assert missing.code == 2 and "crop1: missing from" in missing.err
