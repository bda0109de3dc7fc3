"""loss_curve.png is a matplotlib figure a person can read: the losses and the learning rate on
log axes, each head's validation metrics, titles, axis labels and legends, 1200 x 400 pixels;
training refreshes it at every validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bioim2im.training.plots import save_loss_curve

RECORDS = [
    *({"step": s, "loss": 2.0 / s, "lr": 1e-2 * 0.9**s} for s in range(1, 41)),
    {"step": 20, "val/loss": 0.3, "val/seg/dice": 0.6, "val/seg/dice/1": 0.6, "val/seg/loss": 0.2},
    {"step": 40, "val/loss": 0.1, "val/seg/dice": 0.8, "val/seg/dice/1": 0.8, "val/seg/loss": 0.1},
]


def test_the_curve_has_log_axes_titles_and_each_heads_metrics(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is a dependency of bioim2im")
    figure = save_loss_curve(RECORDS, tmp_path / "loss_curve.png")
    losses, rate, scores = figure.axes
    assert [a.get_title() for a in figure.axes] == [
        "Loss",
        "Learning rate",
        "Validation metrics per head",
    ]
    assert losses.get_yscale() == rate.get_yscale() == "log"
    assert {a.get_xlabel() for a in figure.axes} == {"step"}
    assert [line.get_label() for line in losses.lines] == ["training loss", "validation loss"]
    assert [line.get_label() for line in scores.lines] == ["seg/dice"]
    assert list(scores.lines[0].get_xdata()) == [20, 40]
    assert len(losses.get_yticklabels()) > 2 and len(rate.get_xticklabels()) > 2
    with Image.open(tmp_path / "loss_curve.png") as image:
        png = np.asarray(image.convert("RGB"))
    assert png.shape == (400, 1200, 3)
    assert len(np.unique(png.reshape(-1, 3), axis=0)) > 20  # lines, text and ticks, not blank


def test_training_refreshes_the_curve_at_every_validation(tiny_preset, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is a dependency of bioim2im")
    from bioim2im import api

    run = tmp_path / "run"
    seen: list[tuple[int, bool]] = []

    def on_metrics(record: dict) -> None:  # type: ignore[type-arg]
        if "val/loss" in record:  # told before this validation's refresh
            seen.append((record["step"], (run / "loss_curve.png").is_file()))

    api.train(tiny_preset(), run_dir=run, on_metrics=on_metrics)
    assert seen == [(20, False), (40, True)]  # the first validation drew it
    with Image.open(run / "loss_curve.png") as figure:
        assert figure.size == (1200, 400)
