"""Hostile input the issue did not list, found while fuzzing it. Each ended in a traceback (or
a dead end) on the code of the issue's time; the promise is the usual one: exit 0, or one
message without a traceback (exit 2 for a mistake, 1 for the machine's limits)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_helpers import (
    SPAWN,
    TINY_PRESET,
    Limits,
    assert_user_error,
    ended_cleanly,
    invoke,
    load_weights,
    run,
)


# ---- test-time augmentation over axes the image does not have -------------------------------
def test_check_refuses_tta_over_a_missing_axis(tiny_preset) -> None:
    assert_user_error(invoke("check", tiny_preset(), "--set", "predict.tta=[[5]]"), "predict.tta")


def test_predict_refuses_tta_over_a_missing_axis(
    trained_run: Path, nuclei_data: Path, tmp_path: Path
) -> None:
    result = invoke(
        "predict",
        trained_run,
        "-i",
        nuclei_data / "IM",
        "-o",
        tmp_path / "out",
        "--set",
        "predict.tta=[[5]]",
    )
    assert_user_error(result, "predict.tta")


# ---- sizes beyond the machine ---------------------------------------------------------------
@pytest.mark.parametrize(
    "override",
    [
        "data.patch_size=[100000, 100000]",  # padded images of 37 GiB
        "model.backbone.channels=[100000, 100000]",  # a 360 GB network
        "model.features=1000000000",
        "model.heads.seg.out_channels=100000000",
    ],
)
def test_training_sizes_beyond_memory_end_in_one_message(
    override: str, tiny_preset, trained_run: Path, tmp_path: Path
) -> None:
    """A size that cannot fit is refused up front (exit 2) or fails as out of memory (exit 1);
    never a traceback. (The process gets 2 GiB more than the test process holds.)"""
    result = run(
        "train",
        tiny_preset(),
        "--run-dir",
        tmp_path / "run",
        "--set",
        override,
        "--set",
        "predict.roi_size=[32, 32]",
        cwd=tmp_path,
        limits=Limits(extra_memory=2 << 30),
        timeout=120,
    )
    assert ended_cleanly(result, codes=(1, 2)), result


def test_an_epoch_of_a_trillion_patches_ends_in_one_message(
    tiny_preset, trained_run: Path, tmp_path: Path
) -> None:
    result = run(
        "train",
        tiny_preset(),
        "--run-dir",
        tmp_path / "run",
        "--set",
        "data.patches_per_image=1000000000000",
        "--set",
        "train.epochs=1",
        cwd=tmp_path,
        limits=Limits(extra_memory=2 << 30),
        timeout=120,
    )
    assert ended_cleanly(result, codes=(0, 1, 2)) and result.code != 0, result


# ---- a run killed inside its first checkpoint write -----------------------------------------
@pytest.mark.skipif(SPAWN, reason="a fresh Python ignores SIGXFSZ: only a fork can be killed so")
def test_a_run_killed_in_its_first_checkpoint_write_can_start_again(
    tiny_preset, trained_run: Path, tmp_path: Path
) -> None:
    """No checkpoint to continue from, so `--resume` cannot help; the same command must be able
    to start the run again (it answered "already holds a run; continue it with --resume")."""
    preset, run_dir = tiny_preset(), tmp_path / "run"
    killed = run(
        "train",
        preset,
        "--run-dir",
        run_dir,
        cwd=tmp_path,
        limits=Limits(file_size=30_000, kill_at_file_size=True),
    )
    assert killed.code == -25, killed  # SIGXFSZ, inside the write of the first checkpoint
    assert not (run_dir / "checkpoints" / "last.pt").exists()

    again = invoke("train", preset, "--run-dir", run_dir)
    assert again.code == 0, again
    assert load_weights(run_dir / "checkpoints" / "last.pt")["step"] == 10


# ---- files that are not what they claim -----------------------------------------------------
@pytest.mark.parametrize("where", ["predict", "init_from"])
def test_a_text_file_given_as_a_checkpoint(
    where: str, trained_run: Path, tiny_preset, nuclei_data: Path, tmp_path: Path
) -> None:
    """torch's loader fails with IndexError ("pop from empty list") on a short text file."""
    notes = tmp_path / "notes.txt"
    notes.write_text("a plain file\n", encoding="utf-8")
    if where == "predict":
        result = invoke("predict", notes, "-i", nuclei_data / "IM", "-o", tmp_path / "out")
    else:
        result = invoke(
            "train",
            tiny_preset(),
            "--run-dir",
            tmp_path / "run",
            "--set",
            f'train.init_from="{notes}"',
        )
    assert_user_error(result, "notes.txt")


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
        preset.write_text(TINY_PRESET.format(data=data_copy), encoding="utf-8")
        result = invoke("check", "--data", preset)
    else:
        result = invoke("predict", trained_run, "-i", image, "-o", tmp_path / "out")
    assert_user_error(result, "img_003.zarr")
