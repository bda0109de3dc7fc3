"""Label arrays moved onto a crop's grid, as the challenge's evaluation does.

A crop's grid is a voxel size, the centre of its first voxel (both in nm) and a shape. An array
is brought onto it from the pyramid level nearest that voxel size: instance classes by nearest
neighbour (ids kept), semantic classes by linear interpolation then ``> 0.5``, or, when the
level already has the crop's voxel size and lies on its grid, as it is (``> 0`` counts as
foreground then, as in the challenge). Voxels of the crop outside the array are background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bioim2im.errors import UserError
from bioim2im.io.multiscale import Level, nearest_level, open_levels, same_scale


@dataclass(frozen=True)
class Grid:
    voxel_size: tuple[float, ...]
    translation: tuple[float, ...]
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        # Every reader and writer of a crop relies on these: NaN, infinite or non-positive
        # values would be written as attributes that nothing can place.
        if not (
            len(self.voxel_size) == len(self.translation) == len(self.shape)
            and all(math.isfinite(v) and v > 0 for v in self.voxel_size)
            and all(math.isfinite(t) for t in self.translation)
            and all(int(n) == n and n >= 1 for n in self.shape)
        ):
            raise UserError(
                "not a crop grid: it needs one positive voxel size, one finite translation and "
                f"one positive whole size per axis, got {self.describe()}"
            )

    @classmethod
    def of(cls, level: Level) -> Grid:
        try:
            return cls(level.scale, level.translation, level.shape)
        except UserError as exc:
            raise UserError(f"{level.location}: {exc}") from None

    def describe(self) -> str:
        return (
            f"shape {list(self.shape)}, voxel size {list(self.voxel_size)} nm, translation "
            f"{list(self.translation)} nm"
        )


def on_grid(level: Level, grid: Grid) -> bool:
    """Whether ``level`` has the grid's voxel size and its voxels fall on the grid's."""
    if not same_scale(level.scale, grid.voxel_size, 1e-4):
        return False
    offset = (np.asarray(level.translation) - np.asarray(grid.translation)) / np.asarray(
        grid.voxel_size
    )
    return bool(np.allclose(offset, np.rint(offset), atol=1e-3))


def resample(levels: Sequence[Level], grid: Grid, *, instance: bool) -> np.ndarray:
    """The labels of ``levels`` on ``grid``: instance ids, or a boolean mask for semantic."""
    level = nearest_level(levels, grid.voxel_size)
    options = {
        "first": grid.translation,
        "step": grid.voxel_size,
        "shape": grid.shape,
        "outside": 0,
    }
    if instance:
        return level.sample(**options, order=0)  # type: ignore[arg-type]
    if on_grid(level, grid):
        return np.asarray(level.sample(**options, order=0) > 0)  # type: ignore[arg-type]
    values = level.sample(**options, order=1)  # type: ignore[arg-type]
    return np.asarray(values > 0.5)


def covers(level: Level, grid: Grid) -> bool:
    """Whether ``level`` holds every voxel centre of ``grid``."""
    first = np.asarray(grid.translation)
    last = first + (np.asarray(grid.shape) - 1) * np.asarray(grid.voxel_size)
    slack = 1e-3 * np.asarray(grid.voxel_size)
    return bool(np.all(first >= level.start - slack) and np.all(last <= level.stop + slack))


def open_labels(location: str, fallback: Grid | None = None) -> list[Level]:
    """The levels of a submitted or predicted label array. An array without any voxel size is
    taken to lie on ``fallback`` when it has its shape (the challenge does the same)."""
    try:
        return open_levels(location)
    except UserError as exc:
        if fallback is None or "has no voxel size" not in str(exc):
            raise
    from bioim2im.io import remote

    array = remote.open_array(location)
    if tuple(array.shape[-len(fallback.shape) :]) != fallback.shape:
        raise UserError(
            f"{location}: no voxel_size/translation attributes, and its shape "
            f"{list(array.shape)} is not the crop's {list(fallback.shape)}, so it cannot be placed"
        )
    return [
        Level(
            location,
            fallback.shape,
            fallback.voxel_size,
            fallback.translation,
            np.dtype(array.dtype),
        )
    ]
