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


def importance_profiles(
    blend: str, roi_size: Sequence[int], halo: Sequence[int] | None = None
) -> list[np.ndarray]:
    """The per-axis factors of the weights of ``blend`` ("gaussian" or "constant"); with a
    ``halo``, over the window's interior, and 0 on the ``halo`` voxels at each end."""
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
    bands = list(halo) if halo is not None else [0] * len(roi_size)
    inner = [n - 2 * h for n, h in zip(roi_size, bands, strict=True)]
    if any(n < 1 for n in inner):
        raise ValueError(f"a window of {list(roi_size)} has no interior inside a halo of {bands}")
    if blend == "gaussian":
        profiles = gaussian_profiles(inner)
    else:
        profiles = [np.ones(n, dtype=np.float32) for n in inner]
    return [np.pad(p, (h, h)) for p, h in zip(profiles, bands, strict=True)]


def importance_map(
    blend: str, roi_size: Sequence[int], halo: Sequence[int] | None = None
) -> np.ndarray:
    """The weights of ``blend`` ("gaussian" or "constant") for a window of ``roi_size``
    (0 on its ``halo``)."""
    return _outer(importance_profiles(blend, roi_size, halo))


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


def halo_window_starts(size: int, roi: int, halo: int, align: int = 1) -> list[int]:
    """Where windows of ``roi`` voxels start along an axis of ``size`` voxels padded by
    ``halo`` before it (starts in the padded axis), when only each window's interior counts
    (the ``halo`` voxels at each end of it weigh 0).

    The interiors (``roi - 2 * halo`` voxels) tile the axis: the n-th starts at n interiors,
    the last one is as far as it must go to reach the end, rounded up to a multiple of
    ``align``. Windows start on multiples of ``align`` (the network's divisor) when ``roi`` and
    ``halo`` are multiples of it: a window-independent network then gives every voxel the same
    value in any window whose interior holds it, the value of a whole-image prediction.
    """
    inner = roi - 2 * halo
    if inner < 1:
        raise ValueError(f"a window of {roi} voxels has no interior inside a halo of {halo}")
    if align < 1:
        raise ValueError(f"align must be at least 1, got {align}")
    if size <= inner:
        return [0]
    last = -(-(size - inner) // align) * align
    starts = list(range(0, last, inner))
    return [*starts, last] if starts[-1] != last else starts


def halo_interior_ends(starts: Sequence[int], roi: int, halo: int) -> dict[int, int]:
    """Per window start along an axis tiled by :func:`halo_window_starts`: where the window's
    interior stops counting, in voxels from the window's start. It stops where the next window's
    interior begins, so a voxel two interiors hold takes the later window's value, as
    bioimageio.core's blockwise prediction writes its blocks (the last one overwrites)."""
    ends = {}
    for start, following in zip(starts, [*starts[1:], None], strict=True):
        end = roi - halo
        if following is not None:
            end = min(end, following - start + halo)
        ends[int(start)] = end
    return ends


def halo_pad_widths(size: int, roi: int, halo: int, last_start: int) -> tuple[int, int]:
    """Voxels added before and after an axis predicted with :func:`halo_window_starts`: the
    halo before, and after, as far as the last window reaches (at least the halo)."""
    return halo, max(last_start + roi - halo - size, halo)


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
