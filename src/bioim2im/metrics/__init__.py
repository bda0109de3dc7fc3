"""Metrics between a prediction and its ground truth, one image at a time, and their mean.

- :mod:`~bioim2im.metrics.semantic`: ``dice``, ``iou`` (means) and ``dice/<class>``,
  ``iou/<class>``;
- :mod:`~bioim2im.metrics.instance`: ``precision@t``, ``recall@t``, ``f1@t``, ``ap@t`` for t in
  0.50..0.95, ``ap@0.50:0.95``, ``pq@0.50``, ``mean_matched_iou@0.50``, ``hausdorff``;
- :mod:`~bioim2im.metrics.regression`: ``psnr``, ``ssim``, ``pearson``, ``mae``, ``nrmse``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np


def squeeze_channel(image: np.ndarray) -> np.ndarray:
    """The image without its leading channel axis of size 1, if it has one.

    Only arrays of 3 or more dimensions lose it: a 2D image is never taken for a channel axis.
    """
    image = np.asarray(image)
    return image[0] if image.ndim > 2 and image.shape[0] == 1 else image


def compute(
    task: Literal["semantic", "instance", "regression"],
    pred: np.ndarray,
    truth: np.ndarray,
    **options: Any,
) -> dict[str, float]:
    """Every metric of a task for one image; ``options`` go to the task's metric function.

    semantic: :func:`~bioim2im.metrics.semantic.semantic_metrics` (``classes``);
    instance: :func:`~bioim2im.metrics.instance.instance_metrics` (``voxel_size``,
    ``hausdorff_cap``); regression: :func:`~bioim2im.metrics.regression.regression_metrics`
    (``data_range``).
    """
    metrics: Callable[..., dict[str, float]]
    if task == "semantic":
        from bioim2im.metrics.semantic import semantic_metrics as metrics
    elif task == "instance":
        from bioim2im.metrics.instance import instance_metrics as metrics
    elif task == "regression":
        from bioim2im.metrics.regression import regression_metrics as metrics
    else:
        raise ValueError(f"unknown task {task!r}; valid: semantic, instance, regression")
    return metrics(pred, truth, **options)


def aggregate(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each key over the images that have it, NaN values left out.

    A key whose every value is NaN averages to NaN; keys keep their first-seen order.
    """
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            values.setdefault(key, []).append(float(value))
    means = {}
    for key, column in values.items():
        kept = [v for v in column if not math.isnan(v)]
        means[key] = float(np.mean(kept)) if kept else math.nan
    return means
