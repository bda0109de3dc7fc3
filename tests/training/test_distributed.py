"""Two processes on the CPU through torchrun (gloo): they train on different data, one writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bioim2im.model.checkpoint import load_checkpoint

pytestmark = pytest.mark.distributed


def test_two_process_training_with_devices_option(tiny_preset, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bioim2im",
            "train",
            str(tiny_preset()),
            "--devices",
            "2",
            "--run-dir",
            str(run),
            "--set",
            "train.steps=6",
            "--set",
            "train.val_every=6",
            "--set",
            "train.log_every=1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # one writer, not one per rank
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6


def test_ranks_get_disjoint_sample_indices() -> None:
    from bioim2im.data.loader import sample_indices

    seen = [
        set(sample_indices(start=40, batch_size=3, rank=r, world_size=2, batches=5)) for r in (0, 1)
    ]
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(40, 40 + 2 * 3 * 5))
