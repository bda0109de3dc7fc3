"""Bad checkpoints, inputs and outputs: one clear message, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from predict_helpers import nuclei_image

from bioim2im.io.tiff import write_tiff


class Payload:
    """An arbitrary object: pickling it into a checkpoint is what weights-only loading refuses."""


def assert_refused(result, out: Path, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.code == 2, result.err
    assert "error:" in result.err and "Traceback" not in result.err
    for needle in needles:
        assert needle in result.err.replace("\n", " ")
    assert not out.exists() or not any(out.iterdir()), "something was written"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return nuclei_image(tmp_path / "cells.tif", (64, 64))


def test_missing_checkpoint(cli, image, tmp_path):
    out = tmp_path / "out"
    result = cli("predict", tmp_path / "nothing.pt", "-i", image, "-o", out)
    assert_refused(result, out, "checkpoint not found", "nothing.pt")
    result = cli("predict", tmp_path, "-i", image, "-o", out)
    assert_refused(result, out, "no checkpoint in run directory")


def test_corrupt_checkpoint(cli, run_2d, image, tmp_path):
    checkpoint = tmp_path / "broken.pt"
    data = (run_2d / "checkpoints" / "best.pt").read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert_refused(cli("predict", checkpoint, "-i", image, "-o", out), out, "broken.pt")


def test_a_checkpoint_not_made_by_bioim2im(cli, image, tmp_path):
    checkpoint = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, checkpoint)
    out = tmp_path / "out"
    result = cli("predict", checkpoint, "-i", image, "-o", out)
    assert_refused(result, out, "not a bioim2im checkpoint")


def test_a_checkpoint_holding_pickled_objects_is_refused(cli, image, tmp_path):
    checkpoint = tmp_path / "pickled.pt"
    torch.save({"format": "bioim2im-checkpoint", "model": Payload()}, checkpoint)
    out = tmp_path / "out"
    result = cli("predict", checkpoint, "-i", image, "-o", out)
    assert_refused(result, out, "weights-only")


def test_wrong_number_of_channels(cli, run_2d, tmp_path):
    path = tmp_path / "two_channels.tif"
    write_tiff(path, np.zeros((2, 64, 64), np.float32), axes="CYX")
    out = tmp_path / "out"
    result = cli("predict", run_2d, "-i", path, "-o", out)
    assert_refused(
        result,
        out,
        "two_channels.tif",
        "(2, 64, 64)",
        "CYX",
        "2 channel(s)",
        "expects 1 channel(s)",
    )


def test_wrong_dimensionality(cli, run_2d, tmp_path):
    path = nuclei_image(tmp_path / "stack.tif", (16, 64, 64))
    out = tmp_path / "out"
    result = cli("predict", run_2d, "-i", path, "-o", out)
    assert_refused(result, out, "stack.tif", "3 spatial axes (ZYX)", "2 spatial axes (YX)")


def test_unreadable_input_stops_everything_before_anything_is_written(cli, run_2d, image, tmp_path):
    (image.parent / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF file")
    out = tmp_path / "out"
    result = cli("predict", run_2d, "-i", image.parent, "-o", out)
    # cells.tif is fine, but nothing is predicted while another input is broken.
    assert_refused(result, out, "broken.tif")


def test_missing_input(cli, run_2d, tmp_path):
    out = tmp_path / "out"
    result = cli("predict", run_2d, "-i", tmp_path / "absent.tif", "-o", out)
    assert_refused(result, out, "absent.tif", "no such file")
    result = cli("predict", run_2d, "-i", str(tmp_path / "*.tif"), "-o", out)
    assert_refused(result, out, "no images match")


def test_an_existing_output_is_refused_without_overwrite(cli, run_2d, image, tmp_path):
    out = tmp_path / "out"
    assert cli("predict", run_2d, "-i", image, "-o", out).code == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    # Another command (other settings) does not take these outputs for its own.
    other = ("--set", "predict.tta=true")
    result = cli("predict", run_2d, "-i", image, "-o", out, *other)
    assert (
        result.code == 2 and "cells.ome.zarr exists" in result.err and "--overwrite" in result.err
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # The same command again finds its own finished outputs and leaves them be.
    again = cli("predict", run_2d, "-i", image, "-o", out)
    assert again.code == 0 and "done earlier" in again.err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert cli("predict", run_2d, "-i", image, "-o", out, *other, "--overwrite").code == 0


def test_the_command_line_exits_with_status_2_and_one_message(run_2d, image, tmp_path):
    command = [sys.executable, "-m", "bioim2im", "predict", str(tmp_path / "nothing.pt")]
    command += ["--input", str(image), "--output", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("output_format", ["ome-zarr", "tiff"])
def test_a_full_disk_stops_with_one_message_and_the_same_command_then_finishes(
    run_2d, images_2d, tmp_path: Path, output_format: str
) -> None:
    import resource
    import signal

    def full_disk() -> None:  # writes past 600 bytes fail, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))

    out = tmp_path / "out"
    command = [sys.executable, "-m", "bioim2im", "predict", str(run_2d), "--input",
               str(images_2d), "--output", str(out), "--format", output_format]  # fmt: skip
    failed = subprocess.run(command, preexec_fn=full_disk, capture_output=True, text=True)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "File too large" in failed.stderr and "run the same command again" in failed.stderr
    assert not any(p.name.startswith("cells") for p in out.iterdir())  # nothing published
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert (out / "predictions.csv").is_file()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        [*(f"cells_{i}" + (".ome.zarr" if output_format == "ome-zarr" else "_prob.tif")
           for i in range(3)), *(f"cells_{i}_seg.tif" for i in range(3) if output_format == "tiff"),
         "predictions.csv"]
    )  # fmt: skip


def test_an_output_folder_under_a_file_is_refused(cli, run_2d, image, tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("not a folder")
    result = cli("predict", run_2d, "-i", image, "-o", plain / "out")
    assert result.code == 2
    assert f"{plain} is a file, not a directory" in result.err
