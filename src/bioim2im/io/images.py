"""An image file opened for a model: its spatial axes in ZYX order, channels and time points
(:class:`InputImage`), and one time point read region by region (:class:`TimePoint`).
Prediction reads its inputs through them, and an export its test image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioim2im.io.base import LazyImage

SPATIAL = "ZYX"


@dataclass
class InputImage:
    """One input file, opened lazily, with the layout prediction needs."""

    path: Path
    stem: str
    """The name its outputs are given: the file name without its image suffix."""
    image: LazyImage

    @property
    def axes(self) -> str:
        return self.image.axes

    @property
    def spatial(self) -> str:
        """Its spatial axes in ZYX order."""
        return "".join(a for a in SPATIAL if a in self.axes)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[self.axes.index(a)] for a in self.spatial)

    @property
    def channels(self) -> int:
        return self.image.shape[self.axes.index("C")] if "C" in self.axes else 1

    @property
    def time_points(self) -> int:
        return self.image.shape[self.axes.index("T")] if "T" in self.axes else 1

    @property
    def voxels(self) -> int:
        """Voxels predicted: every time point's spatial voxels."""
        return self.time_points * math.prod(self.spatial_shape)

    @property
    def voxel_size(self) -> tuple[float, ...] | None:
        """Micrometers per voxel in ZYX order, when the file says."""
        size = self.image.voxel_size
        if size is None:
            return None
        stored = [a for a in self.axes if a in SPATIAL]
        return tuple(size[stored.index(a)] for a in self.spatial)

    @property
    def origin(self) -> tuple[float, ...] | None:
        """Micrometers from the origin to the first voxel's centre in ZYX order, when the file
        says (an OME-Zarr translation)."""
        origin = getattr(self.image, "origin", None)
        if origin is None:
            return None
        stored = [a for a in self.axes if a in SPATIAL]
        return tuple(origin[stored.index(a)] for a in self.spatial)

    def at(self, time_point: int) -> TimePoint:
        return TimePoint(self.image, time_point)


class TimePoint:
    """One time point of an image (the image itself when it has no T axis), read by region.

    Its axes are the image's without T; ``spatial_axes`` are their positions in ZYX order.
    """

    def __init__(self, image: LazyImage, time_point: int) -> None:
        self.image = image
        self.time_point = time_point
        self._t = image.axes.index("T") if "T" in image.axes else None
        self.axes = image.axes.replace("T", "")
        self.shape = tuple(n for i, n in enumerate(image.shape) if i != self._t)
        self.spatial_axes = tuple(self.axes.index(a) for a in SPATIAL if a in self.axes)

    def read(self, region: tuple[slice, ...] | None = None) -> np.ndarray:
        region = region or tuple(slice(None) for _ in self.shape)
        if self._t is None:
            return self.image.read(region)
        t = self.time_point
        full = (*region[: self._t], slice(t, t + 1), *region[self._t :])
        return self.image.read(full).squeeze(self._t)

    def channel_first(self) -> np.ndarray:
        """All of it as float32 (C, *spatial), spatial axes in ZYX order."""
        data = self.read()
        other = [a for a in range(data.ndim) if a not in self.spatial_axes]
        data = data.transpose(*other, *self.spatial_axes)
        return data.reshape(-1, *data.shape[len(other) :]).astype(np.float32, copy=False)
