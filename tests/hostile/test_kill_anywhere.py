"""Kills at any moment (issue 11's fuzz suite, and point 8's leftovers).

After `train` or `predict` is killed (SIGKILL: nothing can be cleaned up then), every
checkpoint on disk loads, the next run continues to exactly the state an uninterrupted run
reaches, and when it is done no temporary file is left and no metrics row is repeated.

The kill "in the middle of a checkpoint write" is exact: once the first checkpoint exists the
process gets a file-size limit (``prlimit``) that the next checkpoint crosses, and the kernel
kills it by SIGXFSZ inside that write. The other kills come at random moments (seeded:
``BIOIM2IM_FUZZ_SEED``; more rounds with ``BIOIM2IM_FUZZ=thorough``).
"""

from __future__ import annotations

import os
import random
import resource
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hostile_helpers import (
    SPAWN,
    THOROUGH,
    Limits,
    Result,
    assert_ok,
    ended_cleanly,
    examples,
    invoke,
    load_weights,
    logged_steps,
    metric_rows,
    run,
    start,
    stray_files,
    wait_until,
)

from tiny_presets import tiny_unet_toml

# 80 steps of 8 whole 64 x 64 images: ~1 s once torch is warm, checkpoints every 20 steps.
KILLABLE = [
    "train.steps=80",
    "train.checkpoint_every=20",
    "train.log_every=1",
    "train.val_every=40",
    "data.batch_size=8",
    "data.patch_size=[64, 64]",
    "predict.roi_size=[64, 64]",
]
CHECKPOINTS = {"best.pt", "last.pt"}


def _train_args(preset: Path, run_dir: Path) -> list[str | Path]:
    args: list[str | Path] = ["train", preset, "--run-dir", run_dir]
    for text in KILLABLE:
        args += ["--set", text]
    return args


def seeds() -> list[int]:
    if "BIOIM2IM_FUZZ_SEED" in os.environ:
        return [int(os.environ["BIOIM2IM_FUZZ_SEED"])]
    if THOROUGH:
        return [random.randrange(1 << 30) for _ in range(examples(1, 8))]
    return [0]


def assert_weights_equal(a: Path, b: Path) -> None:
    first, second = load_weights(a), load_weights(b)
    assert first["step"] == second["step"], (first["step"], second["step"])
    for key, value in first["model"].items():
        torch.testing.assert_close(second["model"][key], value, rtol=1e-5, atol=1e-6)


def repeated_rows(run_dir: Path) -> list[tuple[str, int]]:
    """(kind, step) of metrics rows written more than once; kinds: training losses, validation."""
    kinds = Counter(
        ("validation" if any(k.startswith("val/") for k in row) else "training", row["step"])
        for row in metric_rows(run_dir)
    )
    return sorted(key for key, count in kinds.items() if count > 1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, nuclei_data: Path, trained_run: Path):
    root = tmp_path_factory.mktemp("kill")
    preset = root / "tiny.toml"
    preset.write_text(tiny_unet_toml(nuclei_data), encoding="utf-8")
    straight = root / "straight"
    assert_ok(invoke(*_train_args(preset, straight)))
    return preset, straight


# ---- a kill inside a checkpoint write -------------------------------------------------------
@dataclass
class KilledInWrite:
    run_dir: Path
    killed: Result
    loads: dict[str, Any]
    resumed: Result


@pytest.fixture(scope="module")
def killed_in_write(setup, tmp_path_factory: pytest.TempPathFactory) -> KilledInWrite:
    preset, _ = setup
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    process = start(
        *_train_args(preset, run_dir), cwd=run_dir.parent, limits=Limits(kill_at_file_size=True)
    )
    last = run_dir / "checkpoints" / "last.pt"
    wait_until(last.exists, process, what="the first checkpoint")
    # The next checkpoint (~65 kB) crosses 30 kB; metrics.jsonl stays far below.
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (30_000, 30_000))
    killed = process.wait(timeout=120)
    if not SPAWN:
        assert killed.code == -signal.SIGXFSZ, f"not killed in a checkpoint write\n{killed}"
    else:  # a fresh Python ignores SIGXFSZ: the write fails instead ("disk full")
        assert killed.code in (1, -signal.SIGXFSZ), str(killed)
    loads: dict[str, Any] = {}
    for path in sorted((run_dir / "checkpoints").glob("*.pt")):
        try:
            loads[path.name] = load_weights(path)["step"]
        except Exception as exc:  # reported by the test below
            loads[path.name] = exc
    resumed = invoke("train", "--resume", run_dir)
    return KilledInWrite(run_dir, killed, loads, resumed)


def test_every_checkpoint_left_by_a_kill_in_a_write_loads(killed_in_write: KilledInWrite) -> None:
    assert "last.pt" in killed_in_write.loads
    bad = {k: v for k, v in killed_in_write.loads.items() if isinstance(v, Exception)}
    assert bad == {}


def test_resume_after_a_kill_in_a_write_reaches_the_uninterrupted_weights(
    killed_in_write: KilledInWrite, setup
) -> None:
    _, straight = setup
    assert_ok(killed_in_write.resumed)
    run_dir = killed_in_write.run_dir
    assert_weights_equal(straight / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")


def test_the_next_run_removes_what_a_killed_checkpoint_write_left(
    killed_in_write: KilledInWrite,
) -> None:
    """Point 8: temporary files of a write cut short by a kill were never cleaned up."""
    assert_ok(killed_in_write.resumed)
    run_dir = killed_in_write.run_dir
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == CHECKPOINTS
    assert stray_files(run_dir) == []


def test_metrics_rows_are_not_repeated_after_a_resume(killed_in_write: KilledInWrite) -> None:
    """Point 8: the steps between the last checkpoint and the kill were logged twice."""
    assert_ok(killed_in_write.resumed)
    run_dir = killed_in_write.run_dir
    assert repeated_rows(run_dir) == []
    assert sorted(set(logged_steps(run_dir))) == list(range(1, 81))


# ---- kills at random moments ----------------------------------------------------------------
@pytest.mark.parametrize("seed", seeds())
def test_train_killed_at_a_random_moment_continues_to_the_same_weights(
    setup, tmp_path: Path, seed: int
) -> None:
    preset, straight = setup
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    process = start(*_train_args(preset, run_dir), cwd=tmp_path)
    wait_until(lambda: bool(logged_steps(run_dir)), process, what="the first step")
    time.sleep(rng.uniform(0.0, 1.2))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    context = f"seed {seed}, killed after step {max(logged_steps(run_dir), default=0)}"

    for path in (run_dir / "checkpoints").glob("*.pt"):
        load_weights(path)  # every checkpoint on disk is complete
    if (run_dir / "checkpoints" / "last.pt").exists():
        again = invoke("train", "--resume", run_dir)
    else:  # killed before the first checkpoint: the user starts the same command again
        again = invoke(*_train_args(preset, run_dir))
    assert_ok(again)
    assert_weights_equal(straight / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")
    assert stray_files(run_dir) == [], context
    assert repeated_rows(run_dir) == [], context


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    """Every prediction image under ``folder``: TIFFs and the arrays of OME-Zarr groups."""
    import tifffile
    import zarr

    found: dict[str, np.ndarray] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix in (".tif", ".tiff"):
            found[path.name] = tifffile.imread(path)
        elif path.suffix == ".zarr":
            group = zarr.open_group(path, mode="r")
            for name, member in group.members(max_depth=None):
                if isinstance(member, zarr.Array):
                    found[f"{path.name}/{name}"] = np.asarray(member[...])
    return found


@pytest.fixture(scope="module")
def big_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bioim2im.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("big")
    write_dataset(root, kind="nuclei", n_images=3, shape=(192, 192), seed=5, label_kind="semantic")
    return root / "IM"


@pytest.mark.parametrize("seed", seeds())
@pytest.mark.parametrize(
    "output_format", ["ome-zarr", pytest.param("tiff", marks=pytest.mark.fuzz_slow)]
)
def test_predict_killed_at_a_random_moment_gives_the_same_outputs(
    trained_run: Path, big_images: Path, tmp_path: Path, seed: int, output_format: str
) -> None:
    rng = random.Random(seed)
    args = ["--format", output_format, "--set", "predict.batch_size=1"]
    started = time.monotonic()
    assert_ok(invoke("predict", trained_run, "-i", big_images, "-o", tmp_path / "straight", *args))
    duration = time.monotonic() - started
    expected = _outputs(tmp_path / "straight")

    out = tmp_path / "out"
    process = start("predict", trained_run, "-i", big_images, "-o", out, *args, cwd=tmp_path)
    time.sleep(rng.uniform(0.0, duration * 1.2))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    context = f"seed {seed}"
    if out.exists():
        # What is published is complete.
        for name, values in _outputs(out).items():
            np.testing.assert_array_equal(values, expected[name], err_msg=context)

    again = invoke("predict", trained_run, "-i", big_images, "-o", out, *args)
    assert ended_cleanly(again, codes=(0,)), f"{context}\n{again}"
    found = _outputs(out)
    assert sorted(found) == sorted(expected), context
    for name, values in expected.items():
        np.testing.assert_array_equal(found[name], values, err_msg=f"{context}: {name}")
    assert stray_files(out) == [], context


# ---- a run killed inside its first checkpoint write --------------------------------------
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
