"""Issue 11, point 6: SIGTERM / SIGINT during `train` exited 0, so a scheduler or a shell
script took a stopped run for a finished one. The run still stops gracefully, writing
``checkpoints/last.pt`` at the step reached, and exits 128 + the signal (143, 130); `--resume`
continues it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from hostile_helpers import (
    assert_ok,
    invoke,
    load_weights,
    logged_steps,
    start,
    wait_until,
)

ENDLESS = [
    "train.steps=100000",
    "train.checkpoint_every=100000",
    "train.log_every=1",
    "train.val_every=100000",
]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_training_with_a_checkpoint_and_a_failing_exit_status(
    sig: signal.Signals, code: int, tiny_preset, trained_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args: list[str | Path] = ["train", tiny_preset(), "--run-dir", run_dir]
    for text in ENDLESS:
        args += ["--set", text]
    process = start(*args, cwd=tmp_path)
    wait_until(lambda: len(logged_steps(run_dir)) >= 2, process, what="two logged steps")
    process.send_signal(sig)
    result = process.wait(timeout=120)

    # 128 + signal, as a shell reports it (or death by that signal, re-raised).
    assert result.code in (code, -sig), str(result)
    assert "Traceback" not in result.err, str(result)
    assert sig.name in result.err and "--resume" in result.err, str(result)

    state = load_weights(run_dir / "checkpoints" / "last.pt")
    reached = max(logged_steps(run_dir))
    assert state["step"] == reached, (state["step"], reached)

    # --resume continues from there (a few more steps).
    resumed = invoke("train", "--resume", run_dir, "--set", f"train.steps={reached + 3}")
    assert_ok(resumed)
    assert load_weights(run_dir / "checkpoints" / "last.pt")["step"] == reached + 3
