"""A loss whose settings do not fit the targets it is given (a softmax over two classes compared
with class labels, without ``to_onehot_y``) ends training with one message naming the head's
loss, not a traceback from inside the loss."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hostile_helpers import assert_user_error, invoke

TWO_CLASSES = """
[model.heads.seg]
out_channels = 2
loss = { name = "dice_ce", softmax = true, sigmoid = false }
postprocess = [{ name = "softmax" }, { name = "argmax" }]
"""


def test_a_softmax_over_classes_without_onehot_targets_is_one_message(
    tiny_preset: Callable[..., Path], tmp_path: Path
) -> None:
    result = invoke("train", tiny_preset(TWO_CLASSES), "--run-dir", tmp_path / "run")
    assert_user_error(result, "model.heads.seg.loss", "dice_ce", "to_onehot_y")
    assert not (tmp_path / "run").exists()


def test_the_same_head_trains_with_onehot_targets(
    tiny_preset: Callable[..., Path], tmp_path: Path
) -> None:
    fixed = TWO_CLASSES.replace("sigmoid = false", "sigmoid = false, to_onehot_y = true")
    result = invoke("train", tiny_preset(fixed), "--run-dir", tmp_path / "run")
    assert result.code == 0, result
