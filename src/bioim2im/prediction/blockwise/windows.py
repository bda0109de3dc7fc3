"""Sliding windows: where they start along an axis and how their overlapping outputs are weighted."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce

import numpy as np

BLEND_MODES = ("gaussian", "constant")


def gaussian_importance_map(
    roi_size: Sequence[int], sigma_scale: float | Sequence[float] = 1 / 8, min_weight: float = 1e-3
) -> np.ndarray:
    """Weights of a window's voxels for blending: a Gaussian peaking at 1 in the window's centre.

    As in nnU-Net and MONAI, sigma is ``sigma_scale * roi_size`` per axis, so a window's border,
    where the network sees the least context, counts the least. The map is the product of one
    profile per axis (:func:`gaussian_profiles`), each clamped to at least ``min_weight``, so every
    voxel of a window counts a little and no sum of weights is zero. The centre is the exact
    middle, also for even sizes, which keeps the map symmetric under flips.
    """
    return _outer(gaussian_profiles(roi_size, sigma_scale, min_weight))


def gaussian_profiles(
    roi_size: Sequence[int], sigma_scale: float | Sequence[float] = 1 / 8, min_weight: float = 1e-3
) -> list[np.ndarray]:
    """The per-axis factors of :func:`gaussian_importance_map`.

    A separable map makes the sum of the weights of a grid of windows separable too: a product
    of per-axis sums, which a block computes in no time for any part of the image.
    """
    scales = _per_axis(sigma_scale, len(roi_size))
    profiles = []
    for size, scale in zip(roi_size, scales, strict=True):
        offsets = np.arange(size) - (size - 1) / 2
        sigma = max(size * scale, np.finfo(np.float64).tiny)
        profile = np.exp(-0.5 * (offsets / sigma) ** 2)
        profiles.append(np.maximum(profile / profile.max(), min_weight).astype(np.float32))
    return profiles


def constant_importance_map(roi_size: Sequence[int]) -> np.ndarray:
    """Equal weights: overlapping windows are averaged."""
    return np.ones(tuple(roi_size), dtype=np.float32)


def importance_profiles(blend: str, roi_size: Sequence[int]) -> list[np.ndarray]:
    """The per-axis factors of the weights of ``blend`` ("gaussian" or "constant")."""
    if blend == "gaussian":
        return gaussian_profiles(roi_size)
    if blend == "constant":
        return [np.ones(n, dtype=np.float32) for n in roi_size]
    raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")


def importance_map(blend: str, roi_size: Sequence[int]) -> np.ndarray:
    """The weights of ``blend`` ("gaussian" or "constant") for a window of ``roi_size``."""
    return _outer(importance_profiles(blend, roi_size))


def _outer(profiles: Sequence[np.ndarray]) -> np.ndarray:
    return reduce(np.multiply.outer, profiles).astype(np.float32)


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Where windows of ``roi`` voxels start along an axis of ``size`` voxels.

    The first starts at 0 and the last ends flush with the axis; in between they are evenly
    spaced, at most ``roi * (1 - overlap)`` apart (but at least 1) (nnU-Net's rule, which spreads the overlap evenly
    instead of piling it onto the last window). An axis shorter than the window gets a single
    window: the image is padded to the window (see :func:`pad_widths`).
    """
    if roi < 1:
        raise ValueError(f"the window size must be at least 1, got {roi}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= roi:
        return [0]
    # Windows at least one voxel apart, or a large overlap of a small window repeats them.
    count = math.ceil((size - roi) / max(roi * (1.0 - overlap), 1.0)) + 1
    step = (size - roi) / (count - 1)
    return [round(i * step) for i in range(count)]


def pad_widths(size: int, roi: int) -> tuple[int, int]:
    """Voxels added before and after an axis shorter than the window (split like MONAI's)."""
    missing = max(roi - size, 0)
    return missing // 2, missing - missing // 2


def _per_axis(value: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * ndim
    values = tuple(float(v) for v in value)
    if len(values) != ndim:
        raise ValueError(f"expected 1 or {ndim} values, got {len(values)}")
    return values
