"""A semantic head's validation metrics score its classes: the postprocessing up to the first
step that numbers objects, with probabilities made a mask or a class map. ``best.pt`` is chosen
on those values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bioim2im.api import train
from bioim2im.model.checkpoint import load_checkpoint

QUICK = [
    "train.steps=8",
    "train.val_every=4",
    "train.checkpoint_every=4",
    "logging.snapshots=false",
]


def _validations(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "val/seg/dice" in r]


def test_connected_components_in_a_semantic_chain_leave_its_dice_unchanged(
    tiny_preset, tmp_path: Path
) -> None:
    plain = train(tiny_preset(), overrides=QUICK, run_dir=tmp_path / "plain")
    labelled = train(
        tiny_preset(),
        overrides=[
            *QUICK,
            'model.heads.seg.postprocess=[{name = "sigmoid"}, {name = "threshold"}, '
            '{name = "connected_components"}]',
        ],
        run_dir=tmp_path / "labelled",
    )
    assert plain.step == labelled.step == 8
    expected = [r["val/seg/dice"] for r in _validations(tmp_path / "plain")]
    found = [r["val/seg/dice"] for r in _validations(tmp_path / "labelled")]
    # Scored per object id, the dice of many small nuclei was near 0.
    assert found == expected and min(found) > 0.3
    best = load_checkpoint(tmp_path / "labelled" / "checkpoints" / "best.pt")
    assert best["best"] == max(found)


def test_probabilities_of_several_classes_are_scored_on_the_most_likely_class(
    tiny_preset, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train(
        tiny_preset(),
        overrides=[
            *QUICK,
            "model.heads.seg.out_channels=2",
            'model.heads.seg.loss={name = "dice_ce", sigmoid = false, softmax = true, '
            "to_onehot_y = true}",
            'model.heads.seg.postprocess=[{name = "softmax"}]',
        ],
        run_dir=run,
    )
    values = [r["val/seg/dice"] for r in _validations(run)]
    assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    assert all(np.isfinite(v) for v in values)
