"""Exports that cannot be made: one message, exit status 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest


def listing(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def assert_refused(result, before: set[Path], folder: Path, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.code == 2, result.err
    assert result.err.count("error:") == 1 and "Traceback" not in result.err
    for needle in needles:
        assert needle in result.err.replace("\n", " ")
    assert listing(folder) == before, "something was written"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_run_without_a_checkpoint(cli, workspace: Path) -> None:
    run = workspace / "run"
    (run / "checkpoints").mkdir(parents=True)
    before = listing(workspace)
    for format in ("bioimageio", "onnx", "torchscript"):
        result = cli("export", run, "--format", format)
        assert_refused(result, before, workspace, "no checkpoint in run directory")


def test_an_unknown_head(cli, trained_run: Path, workspace: Path) -> None:
    before = listing(workspace)
    result = cli("export", trained_run, "--format", "onnx", "--head", "nuclei", "-o", "m.onnx")
    assert_refused(result, before, workspace, "--head nuclei", "seg, prob")


def test_an_output_that_cannot_be_written(cli, trained_run: Path, workspace: Path) -> None:
    (workspace / "file.txt").write_text("in the way")
    (workspace / "model.zip").write_text("an earlier export")
    before = listing(workspace)
    result = cli("export", trained_run, "--format", "onnx", "-o", workspace / "file.txt" / "m.onnx")
    assert_refused(result, before, workspace, "file.txt is a file")
    result = cli("export", trained_run, "--format", "bioimageio", "-o", workspace / "model.zip")
    assert_refused(result, before, workspace, "model.zip exists", "--overwrite")
    assert (workspace / "model.zip").read_text() == "an earlier export"


def test_bad_options_and_metadata(cli, trained_run: Path, workspace: Path) -> None:
    before = listing(workspace)
    result = cli("export", trained_run, "--format", "keras")
    assert_refused(result, before, workspace, "--format 'keras'", "bioimageio, torchscript, onnx")
    result = cli("export", trained_run, "--format", "onnx", "--folder")
    assert_refused(result, before, workspace, "--folder applies to --format bioimageio")
    result = cli("export", trained_run, "--format", "bioimageio", "--license", "MINE")
    assert_refused(result, before, workspace, "export.license 'MINE'", "SPDX")
    result = cli("export", trained_run, "--format", "bioimageio", "--cite", "A paper")
    assert_refused(result, before, workspace, "--cite needs", "--doi or --url")


def test_a_test_image_that_does_not_fit(cli, trained_run: Path, workspace: Path) -> None:
    import numpy as np

    from bioim2im.io.tiff import write_tiff

    volume = workspace / "volume.tif"
    write_tiff(volume, np.ones((4, 32, 32), np.float32), axes="ZYX", compression="none")
    blank = workspace / "blank.tif"
    write_tiff(blank, np.zeros((48, 48), np.float32), axes="YX", compression="none")
    before = listing(workspace)
    result = cli("export", trained_run, "--format", "bioimageio", "--test-image", volume)
    assert_refused(result, before, workspace, "--test-image", "expects 1 channel(s) and 2")
    result = cli("export", trained_run, "--format", "bioimageio", "--test-image", blank)
    assert_refused(result, before, workspace, "blank.tif", "--test-image")


def test_an_exported_model_is_not_exported_again(cli, trained_run: Path, workspace: Path) -> None:
    result = cli("export", trained_run, "--format", "onnx", "-o", "m.onnx")
    assert result.code == 0, result.err
    assert "m.onnx" in result.err
    before = listing(workspace)
    result = cli("export", workspace / "m.onnx", "--format", "torchscript")
    assert_refused(result, before, workspace, "already an exported model")


def test_a_foreign_onnx_file_needs_its_window(cli, workspace: Path) -> None:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            torch.nn.Conv2d(1, 1, 1), (torch.zeros(1, 1, 8, 8),), "conv.onnx", dynamo=False
        )
    from export_helpers import nuclei_file

    image = nuclei_file(workspace / "cells.tif", (32, 32))
    before = listing(workspace)
    result = cli("predict", "conv.onnx", "-i", image, "-o", workspace / "out")
    assert_refused(result, before, workspace, "predict.roi_size")
