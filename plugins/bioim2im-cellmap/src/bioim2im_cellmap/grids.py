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


# --- the challenge's own alignment (the leaderboard's) --------------------------------------

MAX_SIZE_RATIO = 4096
"""The challenge refuses a submitted array with more voxels than this many times the crop's."""


def recorded(attrs: object, names: Sequence[str], ndim: int) -> tuple[float, ...] | None:
    """The first of the attributes ``names`` (its last ``ndim`` values), as the challenge reads
    voxel sizes (``voxel_size``, ``resolution``, ``scale``) and translations (``translation``,
    ``offset``); None when none is there."""
    from collections.abc import Mapping

    if not isinstance(attrs, Mapping):
        return None
    for name in names:
        value = attrs.get(name)
        if value is None:
            continue
        try:
            numbers = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise UserError(f"attribute {name!r} is not a list of numbers: {value!r}") from None
        if len(numbers) < ndim or not all(math.isfinite(v) for v in numbers):
            raise UserError(f"attribute {name!r} needs {ndim} finite numbers, got {value!r}")
        return numbers[-ndim:]
    return None


def align_like_the_challenge(
    values: np.ndarray,
    voxel_size: Sequence[float] | None,
    translation: Sequence[float] | None,
    grid: Grid,
    *,
    nearest: bool,
) -> np.ndarray:
    """``values`` on ``grid`` exactly as the challenge's evaluator places a submitted array
    (its ``MatchedCrop.load_aligned`` at 6b9ad68), which is what the leaderboard scores:

    - with a voxel size other than the grid's (``np.allclose``), scikit-image ``rescale`` by
      the ratio of voxel sizes, ``mode="constant"``, ranges kept, default anti-aliasing (a
      Gaussian prefilter whenever an axis shrinks, except for integer or boolean arrays at
      order 0): order 0 keeping the dtype when ``nearest`` (the challenge's instance classes),
      else order 1 then ``> 0.5``; an array already at the grid's voxel size is used as it is
      (no threshold);
    - without a voxel size, an array of another shape is centre-padded (zeros) or
      centre-cropped to the grid's shape;
    - placement by whole voxels: the translation is first floored to a multiple of the grid's
      voxel size (counted from 0), then the offset to the grid's translation is floored in
      magnitude (toward zero) to whole voxels; without a translation the array's first voxel
      is the grid's first; voxels of the grid outside the array are 0 (all 0 when an axis does
      not overlap at all).
    """
    image = np.asarray(values)
    shape = tuple(int(n) for n in grid.shape)
    target_vs = np.asarray(grid.voxel_size, dtype=float)
    if image.ndim != len(shape):
        raise UserError(f"{image.ndim} dimensions, the crop has {len(shape)} ({grid.describe()})")
    if image.size / math.prod(shape) > MAX_SIZE_RATIO:
        raise UserError(
            f"shape {list(image.shape)} is more than {MAX_SIZE_RATIO} times the crop's "
            f"{list(shape)} (the challenge refuses it)"
        )
    if voxel_size is not None:
        source_vs = np.asarray(voxel_size, dtype=float)
        if not np.all(source_vs > 0):
            raise UserError(f"voxel size {source_vs.tolist()}: every value must be positive")
        if not np.allclose(source_vs, target_vs):
            from skimage.transform import rescale

            factors = tuple(source_vs / target_vs)
            sizes = zip(image.shape, factors, strict=True)
            rescaled = math.prod(max(round(n * f), 1) for n, f in sizes)
            if rescaled > MAX_SIZE_RATIO * math.prod(shape):
                raise UserError(
                    f"voxel size {source_vs.tolist()} nm would make its {list(image.shape)} "
                    f"voxels {float(rescaled):.3g} at the crop's {list(grid.voxel_size)} nm, more than "
                    f"{MAX_SIZE_RATIO} times the crop's"
                )
            if nearest:
                image = rescale(
                    image, factors, order=0, mode="constant", preserve_range=True
                ).astype(image.dtype)
            else:
                if image.dtype == bool:
                    image = image.astype(np.float32)
                image = rescale(image, factors, order=1, mode="constant", preserve_range=True)
                image = image > 0.5
    elif image.shape != shape:
        image = _centre_pad_crop(image, shape)
    if translation is not None:
        snapped = (np.asarray(translation, dtype=float) // target_vs) * target_vs
        offset = snapped - np.asarray(grid.translation, dtype=float)
        whole = np.minimum(np.abs(offset) // target_vs, 2**40)  # far outside is outside
        shift = (whole * np.sign(offset)).astype(np.int64)
    else:
        shift = np.zeros(len(shape), dtype=int)
    if not shift.any() and image.shape == shape:
        return image
    out = np.zeros(shape, dtype=image.dtype)
    sources, targets = [], []
    for n_in, n_out, s in zip(image.shape, shape, shift.tolist(), strict=True):
        start_in, start_out = (-s, 0) if s < 0 else (0, s)
        length = min(n_in - start_in, n_out - start_out)
        if length <= 0:
            return out
        sources.append(slice(start_in, start_in + length))
        targets.append(slice(start_out, start_out + length))
    out[tuple(targets)] = image[tuple(sources)]
    return out


def _centre_pad_crop(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``image`` padded with zeros (⌊missing / 2⌋ before) or cropped (from ⌊excess / 2⌋) to
    ``shape``, axis by axis."""
    out = np.zeros(shape, dtype=image.dtype)
    sources, targets = [], []
    for n_in, n_out in zip(image.shape, shape, strict=True):
        if n_in >= n_out:
            start = (n_in - n_out) // 2
            sources.append(slice(start, start + n_out))
            targets.append(slice(0, n_out))
        else:
            start = (n_out - n_in) // 2
            sources.append(slice(0, n_in))
            targets.append(slice(start, start + n_in))
    out[tuple(targets)] = image[tuple(sources)]
    return out
