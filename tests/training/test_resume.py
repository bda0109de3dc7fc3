"""A killed run resumes to the very same final state; SIGTERM checkpoints first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bioim2im.api import train
from bioim2im.model.checkpoint import load_checkpoint

SLOW_STEPS = ["train.steps=30", "train.checkpoint_every=5", "train.val_every=15"]


def _start(preset: Path, run: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "bioim2im", "train", str(preset), "--run-dir", str(run)]
    for text in [*SLOW_STEPS, *extra]:
        args += ["--set", text]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_checkpoint(run: Path, process: subprocess.Popen[bytes], min_step: int) -> None:
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.communicate()[1].decode()}")
        if last.exists() and load_checkpoint(last)["step"] >= min_step:
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_preset, tmp_path: Path, cli) -> None:
    preset = tiny_preset()
    straight = tmp_path / "straight"
    train(preset, overrides=SLOW_STEPS, run_dir=straight)

    killed = tmp_path / "killed"
    process = _start(preset, killed)
    _wait_for_checkpoint(killed, process, min_step=10)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    interrupted_at = load_checkpoint(killed / "checkpoints" / "last.pt")["step"]
    assert 10 <= interrupted_at < 30

    result = cli("train", "--resume", killed)
    assert result.code == 0, result.err
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert b["step"] == a["step"] == 30
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6)
    # No temporary or half-written checkpoint is left behind, and each step is logged once
    # (the killed run had logged steps past its last checkpoint).
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in records if "loss" in r]
    assert logged == sorted(set(logged)) and logged[-1] == 30


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_after_the_step_writes_a_checkpoint_and_fails_the_command(
    tiny_preset, tmp_path: Path, cli, stop: signal.Signals, code: int
) -> None:
    run = tmp_path / "run"
    process = _start(tiny_preset(), run, "train.steps=100000", "train.checkpoint_every=100000")
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text().strip():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    os.kill(process.pid, stop)
    _, err = process.communicate(timeout=120)
    # Non-zero, so that `train && predict` does not predict with an unfinished model.
    assert process.returncode == code, err.decode()
    assert "Traceback" not in err.decode()
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 0 < state["step"] < 100000
    assert stop.name in err.decode() and f"--resume {run}" in err.decode()
    # The metrics log holds each step once after resuming.
    resumed = cli("train", "--resume", run, "--set", f"train.steps={state['step'] + 12}")
    assert resumed.code == 0, resumed.err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == sorted(set(steps))


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path: Path, cli) -> None:
    result = cli("train", "--resume", tmp_path)
    assert result.code == 2
    assert "not a bioim2im run directory" in result.err
