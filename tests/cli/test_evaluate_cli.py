"""`bioim2im evaluate` through the command line: table, JSON, CSV, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile


def _write(folder: Path, name: str, array: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / name, array)


def test_semantic_evaluation_writes_json_and_csv(cli, tmp_path: Path) -> None:
    truth = np.zeros((32, 32), np.uint8)
    truth[8:24, 8:24] = 1
    half = truth.copy()
    half[8:24, 16:24] = 0  # half of the object missed: Dice 2*128/(128+256) = 2/3
    _write(tmp_path / "GT", "a.tif", truth)
    _write(tmp_path / "GT", "b.tif", truth)
    _write(tmp_path / "pred", "a_seg.tif", truth)
    _write(tmp_path / "pred", "b_seg.tif", half)

    result = cli(
        "evaluate",
        "--pred",
        tmp_path / "pred",
        "--truth",
        tmp_path / "GT",
        "--task",
        "semantic",
        "--head",
        "seg",
        "--json",
        tmp_path / "m.json",
        "--csv",
        tmp_path / "m.csv",
    )
    assert result.code == 0, result.err
    assert "aggregate" in result.out
    report = json.loads((tmp_path / "m.json").read_text())
    dice = {row["name"]: row["dice"] for row in report["images"]}
    assert dice["a"] == 1.0
    assert abs(dice["b"] - 2 / 3) < 1e-9
    assert abs(report["aggregate"]["dice"] - (1 + 2 / 3) / 2) < 1e-9
    with (tmp_path / "m.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["a", "b", "aggregate"]


def test_missing_prediction_folder_is_a_clear_error(cli, tmp_path: Path) -> None:
    _write(tmp_path / "GT", "a.tif", np.zeros((8, 8), np.uint8))
    result = cli("evaluate", "--pred", tmp_path / "nope", "--truth", tmp_path / "GT")
    assert result.code == 2
    assert str(tmp_path / "nope") in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_a_report_path_that_is_a_directory_is_refused_and_kept(
    cli, tmp_path: Path, option: str
) -> None:
    from bioim2im.io import write_image

    mask = np.zeros((16, 16), np.uint8)
    mask[4:9, 4:9] = 1
    write_image(tmp_path / "P" / "a.tif", mask, axes="YX")
    write_image(tmp_path / "T" / "a.tif", mask, axes="YX")
    kept = tmp_path / "results"
    kept.mkdir()
    (kept / "precious.txt").write_text("keep me")
    result = cli("evaluate", "--pred", tmp_path / "P", "--truth", tmp_path / "T", option, kept)
    assert result.code == 2
    assert f"{option} {kept} is a directory" in result.err and "Traceback" not in result.err
    assert [p.name for p in kept.iterdir()] == ["precious.txt"]


def test_a_nan_in_a_regression_prediction_is_named_not_averaged_away(cli, tmp_path: Path) -> None:
    from bioim2im.io import write_image

    truth = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    prediction = truth.copy()
    prediction[3, 4] = np.nan
    write_image(tmp_path / "P" / "a.tif", prediction, axes="YX")
    write_image(tmp_path / "T" / "a.tif", truth, axes="YX")
    result = cli("evaluate", "--pred", tmp_path / "P", "--truth", tmp_path / "T")
    assert result.code == 2
    assert "a.tif: 1 NaN or infinite value(s) in the prediction" in result.err
