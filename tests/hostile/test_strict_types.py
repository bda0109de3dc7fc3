"""Issue 11, point 7: booleans were accepted as numbers (``train.steps=true`` trained one
step, ``lr=true`` meant 1.0, ``patch_size=[true, true]`` meant [1, 1]). Numbers are strict: a
boolean where a number belongs is refused, naming the key."""

from __future__ import annotations

import pytest
from hostile_helpers import assert_ok, assert_user_error, invoke

BOOLEAN_NUMBERS = [
    ("train.steps=true", "train.steps"),
    ("train.optimizer.lr=true", "lr"),
    ("train.optimizer.weight_decay=false", "weight_decay"),
    ("train.seed=true", "train.seed"),
    ("train.max_minutes=true", "max_minutes"),
    ("train.accumulate=true", "accumulate"),
    ("train.clip_grad_norm=true", "clip_grad_norm"),
    ("data.batch_size=true", "batch_size"),
    ("data.val_fraction=false", "val_fraction"),
    ("data.foreground_fraction=true", "foreground_fraction"),
    ("model.features=true", "features"),
    ("model.heads.seg.out_channels=true", "out_channels"),
    ("model.heads.seg.weight=true", "weight"),
    ("predict.batch_size=true", "predict.batch_size"),
    ("predict.overlap=false", "overlap"),
    ("predict.roi_size=[true, true]", "roi_size"),
    ("data.patch_size=[true, true]", "patch_size"),
    ("model.backbone.channels=[true, true]", "channels"),
    ('data.augment=[{name = "flip", prob = true}]', "prob"),
    (
        'model.heads.seg.postprocess=[{name = "sigmoid"}, {name = "threshold", value = true}]',
        "value",
    ),
]


@pytest.mark.parametrize(("override", "key"), BOOLEAN_NUMBERS, ids=[k for _, k in BOOLEAN_NUMBERS])
def test_a_boolean_is_not_a_number(tiny_preset, override: str, key: str) -> None:
    result = invoke("check", tiny_preset(), "--set", override)
    assert_user_error(result, key)
    # Refused as what it is, not after being read as 1 or 0.
    assert "[1, 1]" not in result.err, result


@pytest.mark.parametrize(
    "override", ["train.optimizer.lr=1", "train.max_minutes=2", "data.val_fraction=0"]
)
def test_an_integer_is_still_a_float(tiny_preset, override: str) -> None:
    assert_ok(invoke("check", tiny_preset(), "--set", override))


def test_a_boolean_in_a_preset_file_is_refused_too(tiny_preset) -> None:
    preset = tiny_preset(extra="")
    text = preset.read_text(encoding="utf-8").replace("steps = 10", "steps = true")
    preset.write_text(text, encoding="utf-8")
    assert_user_error(invoke("check", preset), "steps")
