"""Regression metrics for restoration and label-free prediction: PSNR, SSIM, Pearson, MAE, NRMSE.

Images are 2D or 3D intensity arrays, compared in float64. ``data_range`` (the span of values
PSNR and SSIM consider) defaults to the truth's range, max - min.

Degenerate cases, without warnings: identical images score perfectly (``psnr`` inf, ``ssim``
1, ``nrmse`` 0); otherwise a constant truth with no ``data_range`` given leaves ``psnr``,
``ssim`` and ``nrmse`` undefined (NaN), and ``pearson`` is NaN when either image is constant.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import pearsonr
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity


def _as_float(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    return pred, truth


def _range(truth: np.ndarray, data_range: float | None) -> float:
    return float(np.ptp(truth)) if data_range is None else float(data_range)


def psnr(pred: np.ndarray, truth: np.ndarray, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (skimage's ``peak_signal_noise_ratio``)."""
    pred, truth = _as_float(pred, truth)
    if np.array_equal(pred, truth):
        return math.inf
    span = _range(truth, data_range)
    if span == 0:
        return math.nan
    return float(peak_signal_noise_ratio(truth, pred, data_range=span))


def ssim(pred: np.ndarray, truth: np.ndarray, *, data_range: float | None = None) -> float:
    """Structural similarity, 2D or 3D (skimage's ``structural_similarity``).

    The window is skimage's 7 per side, shrunk to the largest odd size that fits the image's
    smallest side, so thin 3D stacks (e.g. 5 slices) are scored; every side needs >= 3 voxels.
    """
    pred, truth = _as_float(pred, truth)
    smallest = min(truth.shape)
    if smallest < 3:
        raise ValueError(f"ssim needs at least 3 pixels along every axis, got {truth.shape}")
    if np.array_equal(pred, truth):
        return 1.0
    span = _range(truth, data_range)
    if span == 0:
        return math.nan
    window = min(7, smallest if smallest % 2 else smallest - 1)
    return float(structural_similarity(truth, pred, data_range=span, win_size=window))


def pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation coefficient over all pixels."""
    pred, truth = _as_float(pred, truth)
    if np.ptp(pred) == 0 or np.ptp(truth) == 0:
        return math.nan
    return float(pearsonr(pred.ravel(), truth.ravel()).statistic)


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error."""
    pred, truth = _as_float(pred, truth)
    return float(np.mean(np.abs(pred - truth)))


def nrmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error divided by the truth's range, max - min.

    This is skimage's ``normalized_root_mse(truth, pred, normalization="min-max")``.
    """
    pred, truth = _as_float(pred, truth)
    if np.array_equal(pred, truth):
        return 0.0
    if np.ptp(truth) == 0:
        return math.nan
    return float(normalized_root_mse(truth, pred, normalization="min-max"))


def regression_metrics(
    pred: np.ndarray, truth: np.ndarray, *, data_range: float | None = None
) -> dict[str, float]:
    """``psnr``, ``ssim``, ``pearson``, ``mae`` and ``nrmse`` of one image."""
    return {
        "psnr": psnr(pred, truth, data_range=data_range),
        "ssim": ssim(pred, truth, data_range=data_range),
        "pearson": pearson(pred, truth),
        "mae": mae(pred, truth),
        "nrmse": nrmse(pred, truth),
    }
