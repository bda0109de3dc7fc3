"""Semantic segmentation metrics: Dice and IoU per class and their mean.

Images are label maps (integer class indices, 0 = background) or binary masks (``True`` is
class 1). By default the classes scored are the non-background classes present in the
prediction or the truth. A class absent from both scores 1.0 (nothing to find, nothing wrongly
found); when no class is scored at all, the means are 1.0 too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _present_classes(pred: np.ndarray, truth: np.ndarray) -> list[int]:
    present = np.union1d(np.unique(pred), np.unique(truth))
    return [int(c) for c in present if c != 0]


def _counts(
    pred: np.ndarray, truth: np.ndarray, classes: Sequence[int] | None
) -> dict[int, tuple[int, int, int]]:
    """(intersection, predicted size, true size) per class."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    counts = {}
    for c in _present_classes(pred, truth) if classes is None else classes:
        p, t = pred == c, truth == c
        counts[int(c)] = (
            int(np.count_nonzero(p & t)),
            int(np.count_nonzero(p)),
            int(np.count_nonzero(t)),
        )
    return counts


def _mean_and_per_class(name: str, per_class: dict[int, float]) -> dict[str, float]:
    mean = float(np.mean(list(per_class.values()))) if per_class else 1.0
    return {name: mean, **{f"{name}/{c}": v for c, v in per_class.items()}}


def _dice(counts: dict[int, tuple[int, int, int]]) -> dict[str, float]:
    return _mean_and_per_class(
        "dice", {c: 2 * both / (p + t) if p + t else 1.0 for c, (both, p, t) in counts.items()}
    )


def _iou(counts: dict[int, tuple[int, int, int]]) -> dict[str, float]:
    return _mean_and_per_class(
        "iou", {c: both / (p + t - both) if p + t else 1.0 for c, (both, p, t) in counts.items()}
    )


def dice(
    pred: np.ndarray, truth: np.ndarray, *, classes: Sequence[int] | None = None
) -> dict[str, float]:
    """``dice`` (mean over classes) and ``dice/<class>`` = 2|P∩T| / (|P| + |T|)."""
    return _dice(_counts(pred, truth, classes))


def iou(
    pred: np.ndarray, truth: np.ndarray, *, classes: Sequence[int] | None = None
) -> dict[str, float]:
    """``iou`` (mean over classes) and ``iou/<class>`` = |P∩T| / |P∪T| (Jaccard index)."""
    return _iou(_counts(pred, truth, classes))


def semantic_metrics(
    pred: np.ndarray, truth: np.ndarray, *, classes: Sequence[int] | None = None
) -> dict[str, float]:
    """Both :func:`dice` and :func:`iou`."""
    counts = _counts(pred, truth, classes)
    return {**_dice(counts), **_iou(counts)}
