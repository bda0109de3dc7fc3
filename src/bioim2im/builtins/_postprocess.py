"""Array functions behind ``bioim2im.builtins.postprocess``.

Each takes one image's head output shaped (C, *spatial) and returns (C', *spatial).
Masks are arrays whose values are 0 and 1 (bool included); other integer arrays are label images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from scipy import ndimage, special
from skimage import feature, measure, morphology, segmentation


def sigmoid(array: np.ndarray) -> np.ndarray:
    return special.expit(array)


def softmax(array: np.ndarray) -> np.ndarray:
    return special.softmax(array, axis=0)


def argmax(array: np.ndarray) -> np.ndarray:
    dtype = np.uint8 if array.shape[0] <= 256 else np.uint16
    return array.argmax(axis=0)[np.newaxis].astype(dtype)


def threshold(array: np.ndarray, *, value: float) -> np.ndarray:
    return (array > value).astype(np.uint8)


def _per_channel(
    function: Callable[..., np.ndarray], array: np.ndarray, **options: Any
) -> np.ndarray:
    return np.stack([function(channel, **options) for channel in array])


def _is_mask(channel: np.ndarray) -> bool:
    return channel.dtype == bool or channel.max(initial=0) <= 1


def _label(mask: np.ndarray, connectivity: int) -> np.ndarray:
    return measure.label(mask, connectivity=connectivity).astype(np.uint32)


def connected_components(array: np.ndarray, *, connectivity: int) -> np.ndarray:
    return _per_channel(_label, array != 0, connectivity=connectivity)


def _filter_sizes(
    channel: np.ndarray, *, min_size: int, max_size: int | None, connectivity: int
) -> np.ndarray:
    is_mask = _is_mask(channel)
    labels = _label(channel, connectivity) if is_mask else channel
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    if max_size is not None:
        keep &= sizes <= max_size
    keep[0] = False
    kept = keep[labels]
    return kept.astype(channel.dtype) if is_mask else np.where(kept, channel, 0)


def filter_sizes(
    array: np.ndarray, *, min_size: int, max_size: int | None, connectivity: int
) -> np.ndarray:
    """Keep objects of min_size to max_size pixels: mask components, or labels of a label image."""
    return _per_channel(
        _filter_sizes, array, min_size=min_size, max_size=max_size, connectivity=connectivity
    )


def _fill_holes(channel: np.ndarray) -> np.ndarray:
    labels = channel.astype(np.uint8) if channel.dtype == bool else channel
    filled = labels.copy()
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        holes = ndimage.binary_fill_holes(labels[box] == index) & (labels[box] == 0)
        filled[box][holes] = index
    return filled.astype(channel.dtype)


def fill_holes(array: np.ndarray) -> np.ndarray:
    """Fill the background enclosed by each object (a mask is one object per channel)."""
    return _per_channel(_fill_holes, array)


def _blurred(values: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(values.astype(np.float32), sigma) if sigma > 0 else values


def watershed(
    array: np.ndarray,
    *,
    mode: Literal["distance", "probability", "boundary"],
    fg_channel: int,
    threshold: float,
    min_distance: int,
    h: float | None,
    seed_channel: int,
    seed_threshold: float,
    smooth: float = 0.0,
) -> np.ndarray:
    """Seeded watershed of the foreground (fg_channel > threshold) into labels (1, *spatial)."""
    foreground = array[fg_channel] > threshold
    if mode == "distance":
        elevation = _blurred(ndimage.distance_transform_edt(foreground), smooth)
        if h is not None:
            peaks = morphology.h_maxima(elevation, h).astype(bool)
        else:
            peaks = np.zeros_like(foreground)
            coordinates = feature.peak_local_max(
                elevation,
                min_distance=min_distance,
                labels=measure.label(foreground),
                exclude_border=False,
            )
            peaks[tuple(coordinates.T)] = True
        seeds = measure.label(peaks)
    else:
        elevation = array[seed_channel]
        if mode == "boundary":
            elevation = array[fg_channel] * (1 - elevation)
        elevation = _blurred(elevation, smooth)
        seeds = measure.label((elevation > seed_threshold) & foreground)
    # Flood from the seeds down the elevation: from object centres (or cores) to their borders.
    labels = segmentation.watershed(-elevation, seeds, mask=foreground)
    return labels[np.newaxis].astype(np.uint32)
