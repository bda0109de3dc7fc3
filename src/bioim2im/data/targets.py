"""What a head is trained against: its target patch encoded for its task, and a cost map.

Encodings, all float32 (C, *spatial):

- ``semantic``: 1 output channel -> (label > 0), 1 channel; C > 1 -> class indices, 1 channel
  (losses turn them into one-hot), or from a target of one mask per class (classes that may
  overlap), the C masks (label > 0);
- ``instance``: 1 -> foreground; 2 -> (foreground, boundary) channels; 3 -> class indices
  0 background / 1 interior / 2 boundary, 1 channel. Boundaries are the objects' own outermost
  pixels (scikit-image ``find_boundaries``, mode "inner"), so touching objects stay apart;
- ``regression``: the (already normalised) target as is.

The weight ("cost map") is the user's cost map (1 where none is given) times 0 wherever the
target is unannotated (``ignore_value``) or not finite: 1 channel, or with ``per_channel`` (a
target of one mask per class) one channel per class, so that a class unannotated at a pixel
leaves the other classes' loss there untouched.
"""

from __future__ import annotations

import numpy as np

INSTANCE_CHANNELS = (1, 2, 3)


def split_valid(
    target: np.ndarray,
    ignore_value: float | None,
    cost_map: np.ndarray | None,
    *,
    per_channel: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(target with unannotated pixels set to 0, weight (1 or C, *spatial))."""
    valid = np.isfinite(target)
    if ignore_value is not None:
        valid &= target != ignore_value
    weight = (valid if per_channel else valid.all(axis=0, keepdims=True)).astype(np.float32)
    if cost_map is not None:
        weight *= cost_map[:1]
    if not valid.all():
        target = np.where(valid, target, np.float32(0.0))
    return target, weight


def encode(target: np.ndarray, task: str, out_channels: int) -> np.ndarray:
    """The training target of a head (see the module docstring)."""
    if task == "regression":
        return target
    foreground = target > 0
    if task == "semantic":
        masks = out_channels == 1 or target.shape[0] > 1
        return foreground.astype(np.float32) if masks else target
    if out_channels == 1:
        return foreground.astype(np.float32)
    from skimage.segmentation import find_boundaries

    boundary = find_boundaries(target[0].astype(np.int64), mode="inner")[None]
    if out_channels == 2:
        return np.concatenate([foreground, boundary]).astype(np.float32)
    return foreground.astype(np.float32) + boundary
