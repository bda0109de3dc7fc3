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


def periodic_peak(residual: np.ndarray, *, tile: int = 32) -> float:
    """The share of ``residual``'s energy (an output minus the truth; 2D, or 3D taken plane by
    plane) in its strongest periodic component: how much the power of one spatial frequency
    stands above the median power of the frequencies as far from zero (the noise there), over
    the residual's total power.

    The power spectrum is averaged over half-overlapping, Hann-windowed tiles of ``tile``
    pixels, so noise averages out while a texture that repeats with a period dividing the tile
    (the grid of a strided or pooling network: 2, 4, 8 pixels) stays a sharp peak; frequencies
    below 3 cycles per tile (slow shading) are left out. Noise and smooth errors score below
    about 0.01; a visible grid texture several times that.
    """
    planes = residual.reshape(-1, *residual.shape[-2:]).astype(np.float64)
    height, width = planes.shape[1:]
    if height < tile or width < tile:
        raise ValueError(f"periodic_peak needs planes of at least {tile} x {tile} pixels")
    window = np.outer(np.hanning(tile), np.hanning(tile))
    power = np.zeros((tile, tile))
    step = tile // 2
    for plane in planes:
        for y in range(0, height - tile + 1, step):
            for x in range(0, width - tile + 1, step):
                cut = plane[y : y + tile, x : x + tile]
                power += np.abs(np.fft.fft2((cut - cut.mean()) * window)) ** 2
    total = float(power.sum())
    if total == 0:
        return 0.0
    frequency = np.fft.fftfreq(tile) * tile
    radius = np.rint(np.hypot(*np.meshgrid(frequency, frequency, indexing="ij"))).astype(int)
    median = np.array([np.median(power[radius == r]) for r in range(radius.max() + 1)])
    excess = power - median[radius]
    excess[radius < 3] = 0.0
    return float(excess.max() / total)


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
