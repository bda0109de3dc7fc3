"""`bioim2im demo`: synthetic data -> train -> predict -> evaluate, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end_and_learns(cli, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = cli("demo", "--output", out, "--minutes", "0.4")
    assert result.code == 0, result.err
    for path in (
        "data/train/IM",
        "data/test/GT",
        "run/preset.toml",
        "run/checkpoints/best.pt",
        "run/metrics.jsonl",
        "run/loss_curve.png",
        "predictions/predictions.csv",
        "metrics.json",
    ):
        assert (out / path).exists(), path
    assert sorted(p.name for p in (out / "predictions").glob("*_seg.tif")) == [
        f"img_{i:03d}_seg.tif" for i in range(4)
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    # Even a short run separates nuclei from background far better than chance.
    assert metrics["aggregate"]["dice"] > 0.85
    assert "aggregate" in result.out or "aggregate" in result.err
    assert str(out / "metrics.json") in result.err

    again = cli("demo", "--output", out)
    assert again.code == 2
    assert "--overwrite" in again.err


def test_demo_refuses_to_delete_a_folder_it_did_not_make(cli, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = cli("demo", "--output", tmp_path, "--overwrite")
    assert result.code == 2
    assert "not made by `bioim2im demo`" in result.err
    assert (tmp_path / "precious.txt").exists()
