"""A CellMap test-crop manifest is checked row by row before anything is read or written: a
malformed one ends with exit 2 and one message naming the file, the line and the column; a
name in it never becomes a path outside the output."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_helpers import assert_user_error, changes, invoke, snapshot

HEADER = "crop_name,dataset,class_label,voxel_size,translation,shape\n"
GOOD = "1,jrc_alpha,mito,[8.0;8.0;8.0],[4.0;4.0;4.0],[4;6;6]\n"

# name: (the manifest's rows after the header, the line at fault, what the message names)
MALFORMED = {
    "2-D shape": ("1,jrc_alpha,mito,[8;8],[4;4],[6;6]\n", 2, "column voxel_size"),
    "4-D shape": ("1,jrc_alpha,mito,[8;8;8],[4;4;4],[1;4;6;6]\n", 2, "column shape"),
    "infinite shape": ("1,jrc_alpha,mito,[8;8;8],[4;4;4],[inf;6;6]\n", 2, "column shape"),
    "huge shape": ("1,jrc_alpha,mito,[8;8;8],[4;4;4],[1e300;6;6]\n", 2, "column shape"),
    "fractional shape": ("1,jrc_alpha,mito,[8;8;8],[4;4;4],[4.5;6;6]\n", 2, "column shape"),
    "zero shape": ("1,jrc_alpha,mito,[8;8;8],[4;4;4],[0;6;6]\n", 2, "column shape"),
    "NaN voxel size": ("1,jrc_alpha,mito,[nan;8;8],[4;4;4],[4;6;6]\n", 2, "column voxel_size"),
    "infinite voxel size": (
        "1,jrc_alpha,mito,[8;1e999;8],[4;4;4],[4;6;6]\n",
        2,
        "column voxel_size",
    ),
    "negative voxel size": (
        "1,jrc_alpha,mito,[-8;8;8],[4;4;4],[4;6;6]\n",
        2,
        "column voxel_size",
    ),
    "NaN translation": ("1,jrc_alpha,mito,[8;8;8],[nan;4;4],[4;6;6]\n", 2, "column translation"),
    "class name going up": (
        "1,jrc_alpha,../../escaped,[8;8;8],[4;4;4],[4;6;6]\n",
        2,
        "column class_label",
    ),
    "class name with a slash": (
        "1,jrc_alpha,mito/x,[8;8;8],[4;4;4],[4;6;6]\n",
        2,
        "column class_label",
    ),
    "crop name with a slash": (
        "1/2,jrc_alpha,mito,[8;8;8],[4;4;4],[4;6;6]\n",
        2,
        "column crop_name",
    ),
    "crop name in fullwidth digits": (
        "１,jrc_alpha,mito,[8;8;8],[4;4;4],[4;6;6]\n",
        2,
        "column crop_name",
    ),
    "dataset going up": (
        "1,../jrc_alpha,mito,[8;8;8],[4;4;4],[4;6;6]\n",
        2,
        "column dataset",
    ),
    "duplicate row": (GOOD + GOOD, 3, "listed twice"),
    "crop in two datasets": (
        GOOD + "1,jrc_beta,er,[8;8;8],[4;4;4],[4;6;6]\n",
        3,
        "column dataset",
    ),
    "too few fields": ("1,jrc_alpha,mito\n", 2, "expected 6 fields"),
}


def _commands(manifest: Path, root: Path) -> list[tuple[str | Path, ...]]:
    """Every command that reads a manifest; the predictions and the model are never reached."""
    predictions = root / "predictions.zarr"
    predictions.mkdir(exist_ok=True)
    return [
        (
            "cellmap",
            "pack",
            predictions,
            "--crops",
            manifest,
            "-o",
            root / "out" / "submission.zip",
        ),
        ("cellmap", "pack", root / "submission.zip", "--crops", manifest, "--check"),
        (
            "cellmap",
            "predict",
            root / "run",
            "--crops",
            manifest,
            "--raw",
            "d/{dataset}",
            "-o",
            root / "out",
        ),
    ]


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_manifest_row_is_named_by_file_line_and_column(case: str, tmp_path: Path):
    rows, line, what = MALFORMED[case]
    manifest = tmp_path / "test_crop_manifest.csv"
    manifest.write_text(HEADER + rows, encoding="utf-8")
    before = snapshot(tmp_path)
    for command in _commands(manifest, tmp_path):
        result = invoke(*command)
        assert_user_error(result, str(manifest), f"line {line}", what)
    assert changes(before, snapshot(tmp_path), allowed=[tmp_path / "predictions.zarr"]) == []
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize(
    ("data", "what"),
    [
        ((HEADER + GOOD).encode("utf-16"), "not UTF-8 text: line 1"),
        ((HEADER + GOOD).encode() + "1,jrc_alpha,er,é".encode("latin-1"), "not UTF-8 text: line 3"),
        ((HEADER + GOOD).encode() + b"2,jrc_alpha,er,\x00,,\n", "line 3, column voxel_size"),
        ((HEADER + '1,"jrc_alpha' + "x" * 200_000 + '"\n').encode(), "not a readable CSV"),
    ],
    ids=["utf-16", "latin-1", "NUL byte", "endless field"],
)
def test_a_manifest_that_is_not_utf8_csv_is_one_message(data: bytes, what: str, tmp_path: Path):
    manifest = tmp_path / "test_crop_manifest.csv"
    manifest.write_bytes(data)
    for command in _commands(manifest, tmp_path):
        assert_user_error(invoke(*command), str(manifest), what)


def test_a_manifest_saved_with_a_byte_order_mark_is_read(tmp_path: Path):
    manifest = tmp_path / "test_crop_manifest.csv"
    manifest.write_bytes((HEADER + GOOD).encode("utf-8-sig"))
    result = invoke("cellmap", "pack", tmp_path / "none.zip", "--crops", manifest, "--check")
    assert_user_error(result, "none.zip: no such file")
