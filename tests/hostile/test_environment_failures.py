"""Issue 11, point 5: failures of the environment print one message, never a traceback.

A full disk is simulated without root: the command runs in a process whose ``RLIMIT_FSIZE``
is N bytes, with SIGXFSZ ignored, so that a write past N bytes fails with EFBIG ("File too
large") as a write to a full disk fails with ENOSPC. N is chosen so that the run's small files
fit and a checkpoint (~65 kB) or a prediction does not.

An environment failure exits 1 with one ``error:`` message naming the path and the OS's
cause, and leaves no partial or temporary file next to the target. Read-only folders need a
user that permissions apply to (not root); their root-proof twins put the path under a
regular file (ENOTDIR, "Not a directory").
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from hostile_helpers import (
    IS_ROOT,
    Limits,
    assert_environment_error,
    assert_ok,
    assert_user_error,
    changes,
    error_lines,
    invoke,
    run,
    snapshot,
    stray_files,
)

needs_permissions = pytest.mark.skipif(
    IS_ROOT, reason="root ignores file permissions; the not-a-folder variants cover this"
)
FILE_TOO_LARGE = os.strerror(27)  # EFBIG, "File too large"


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---- a full disk ----------------------------------------------------------------------------
def test_disk_full_while_writing_a_checkpoint(
    tiny_preset, trained_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run(
        "train", tiny_preset(), "--run-dir", run_dir, cwd=tmp_path, limits=Limits(file_size=30_000)
    )
    assert_environment_error(result, run_dir / "checkpoints" / "last.pt", FILE_TOO_LARGE)
    assert stray_files(run_dir) == [], "a partial checkpoint was left behind"
    assert not (run_dir / "checkpoints" / "last.pt").exists()


def test_disk_full_when_a_run_starts(tiny_preset, trained_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run(
        "train", tiny_preset(), "--run-dir", run_dir, cwd=tmp_path, limits=Limits(file_size=512)
    )
    assert_environment_error(result, run_dir / "preset.toml", FILE_TOO_LARGE)
    # The run directory the command created holds nothing useful: it is gone.
    assert not run_dir.exists(), _files(run_dir)


def test_disk_full_during_predict(trained_run: Path, nuclei_data: Path, tmp_path: Path) -> None:
    """Probabilities (float32, 16 kB an image) cannot be written past 4 kB."""
    out = tmp_path / "predictions"
    probabilities = 'model.heads.seg.postprocess=[{name = "sigmoid"}]'
    args = ["predict", trained_run, "-i", nuclei_data / "IM", "-o", out, "--format", "tiff"]
    result = run(*args, "--set", probabilities, cwd=tmp_path, limits=Limits(file_size=4000))
    assert_environment_error(result, out, FILE_TOO_LARGE)
    # Nothing half-written is published: every visible output is a complete image.
    import tifffile

    for path in out.glob("*.tif"):
        assert tifffile.imread(path).shape[-2:] == (64, 64), path
    # With room again, the same command completes and leaves nothing temporary behind.
    assert_ok(invoke(*args, "--set", probabilities))
    assert len(list(out.glob("*.tif"))) == 6
    assert stray_files(out) == []


# ---- folders that cannot be written ---------------------------------------------------------
def test_run_dir_that_is_a_file(tiny_preset, tmp_path: Path) -> None:
    blocker = tmp_path / "run"
    blocker.write_text("a file, not a folder", encoding="utf-8")
    result = invoke("train", tiny_preset(), "--run-dir", blocker)
    assert result.code in (1, 2), result
    assert "Traceback" not in result.err and len(error_lines(result.err)) == 1, result
    assert str(blocker) in result.err.replace("\n", ""), result
    assert blocker.read_text(encoding="utf-8") == "a file, not a folder"


@pytest.mark.parametrize("command", ["train", "predict"])
def test_output_folder_under_a_regular_file(
    command: str, tiny_preset, trained_run: Path, nuclei_data: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file", encoding="utf-8")
    target, preset = blocker / "out", tiny_preset()
    before = snapshot(tmp_path)
    if command == "train":
        result = invoke("train", preset, "--run-dir", target)
    else:
        result = invoke("predict", trained_run, "-i", nuclei_data / "IM", "-o", target)
    assert changes(before, snapshot(tmp_path)) == []
    assert result.code in (1, 2), result
    assert "Traceback" not in result.err and len(error_lines(result.err)) == 1, result
    assert "notes.txt" in result.err and "not a directory" in result.err.lower(), result


@needs_permissions
def test_read_only_parent_of_the_run_dir(tiny_preset, trained_run: Path, tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        result = run("train", tiny_preset(), "--run-dir", parent / "run", cwd=tmp_path)
    finally:
        parent.chmod(0o755)
    assert_environment_error(result, parent / "run", os.strerror(13))
    assert list(parent.iterdir()) == []


@needs_permissions
def test_read_only_run_dir_on_resume(trained_run: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(trained_run, tmp_path / "run"))
    for folder in (run_dir, run_dir / "checkpoints"):
        folder.chmod(0o555)
    checkpoints = snapshot(run_dir / "checkpoints")
    try:
        result = run("train", "--resume", run_dir, "--set", "train.steps=12", cwd=tmp_path)
    finally:
        for folder in (run_dir, run_dir / "checkpoints"):
            folder.chmod(0o755)
    assert_environment_error(result, run_dir, os.strerror(13))
    assert changes(checkpoints, snapshot(run_dir / "checkpoints")) == []


@needs_permissions
def test_read_only_output_folder_of_predict(
    trained_run: Path, nuclei_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = run("predict", trained_run, "-i", nuclei_data / "IM", "-o", out, cwd=tmp_path)
    finally:
        out.chmod(0o755)
    assert_environment_error(result, out, os.strerror(13))
    assert list(out.iterdir()) == []


@needs_permissions
def test_unreadable_truth_folder(nuclei_data: Path, trained_run: Path, tmp_path: Path) -> None:
    truth = Path(shutil.copytree(nuclei_data / "GT", tmp_path / "GT"))
    truth.chmod(0o000)
    try:
        result = run("evaluate", "-p", nuclei_data / "GT", "-t", truth, cwd=tmp_path)
    finally:
        truth.chmod(0o755)
    assert_environment_error(result, truth, os.strerror(13))


@pytest.mark.parametrize("damage", ["dangling link", "folder named like an image"])
def test_unreadable_truth_file(nuclei_data: Path, tmp_path: Path, damage: str) -> None:
    """Root-proof twins of an unreadable truth: one message naming the file."""
    truth = Path(shutil.copytree(nuclei_data / "GT", tmp_path / "GT"))
    victim = truth / "img_002.tif"
    victim.unlink()
    if damage == "dangling link":
        victim.symlink_to(tmp_path / "gone.tif")
    else:
        victim.mkdir()
    result = invoke("evaluate", "-p", nuclei_data / "GT", "-t", truth)
    assert result.code in (1, 2), result
    assert "Traceback" not in result.err and len(error_lines(result.err)) == 1, result
    assert "img_002" in result.err, result


# ---- runs that cannot continue --------------------------------------------------------------
def test_resume_with_a_set_that_changes_the_network(trained_run: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(trained_run, tmp_path / "run"))
    before = snapshot(run_dir)
    result = invoke(
        "train",
        "--resume",
        run_dir,
        "--set",
        "model.backbone.channels=[4, 8]",
        "--set",
        "train.steps=12",
    )
    assert_user_error(result)
    message = result.err.split("error:", 1)[1]
    assert "last.pt" in message or ("checkpoint" in message.lower() and "run" in message), result
    assert changes(before, snapshot(run_dir)) == []


# ---- presets nested beyond reason -----------------------------------------------------------
DEPTH = 500


@pytest.mark.parametrize("shape", ["arrays", "tables", "dotted key"])
def test_a_preset_nested_500_deep(tiny_preset, tmp_path: Path, shape: str) -> None:
    if shape == "arrays":
        extra = "x = " + "[" * DEPTH + "]" * DEPTH + "\n"
    elif shape == "tables":
        extra = "x = " + "{a = " * DEPTH + "1" + "}" * DEPTH + "\n"
    else:
        extra = ".".join(["a"] * DEPTH) + " = 1\n"
    preset = tiny_preset()
    deep = tmp_path / "deep.toml"
    deep.write_text(f'extends = "{preset.name}"\n' + extra, encoding="utf-8")
    assert_user_error(invoke("check", deep), "deep.toml")


@pytest.mark.parametrize(
    "override",
    [
        "x=" + "[" * DEPTH + "]" * DEPTH,
        "x=" + "{a=" * DEPTH + "1" + "}" * DEPTH,
        ".".join(["a"] * DEPTH) + "=1",
        "train.optimizer=" + "{a=" * DEPTH + "1" + "}" * DEPTH,
    ],
    ids=["arrays", "tables", "dotted key", "component"],
)
def test_a_set_nested_500_deep(tiny_preset, override: str) -> None:
    result = invoke("check", tiny_preset(), "--set", override)
    assert_user_error(result)
    assert re.search(r"--set|nest|deep", result.err, re.I), result


def test_a_huge_preset_is_refused_or_read_quickly(tiny_preset, tmp_path: Path) -> None:
    """A preset holding a long array: a clear answer, no hang, no traceback."""
    big = tmp_path / "big.toml"
    numbers = ", ".join(["1"] * 20_000)
    big.write_text(f'extends = "{tiny_preset().name}"\nx = [{numbers}]\n', encoding="utf-8")
    result = invoke("check", big)
    assert_user_error(result, "x")
    assert len(result.err) < 100_000, "the message quotes the whole value"
