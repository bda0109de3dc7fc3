"""Block planning: the image is predicted block by block so memory does not grow with its size.

Design: ONE window grid covers the whole image (:func:`~bioim2im.prediction.blockwise.windows.window_starts`
per axis). The image is cut into blocks; a block's *core* is the part of the output it finishes,
and the block runs exactly the global windows that intersect its core, accumulating their weighted
outputs only over the core. Every core voxel therefore receives the same windows, with the same
weights and in the same order, as in a whole-image sliding window, so the block-wise result equals
the whole-image one (up to the numerical noise of batching windows differently).

The *halo* is what those windows cover outside the core: between ``roi - step`` (the overlap)
and ``roi - 1`` voxels on each side, clipped at the image border. It need not reach any fixed
size: exactness comes from running the right windows, not from a wide enough margin. Windows straddling a
block border run once for each block they touch; that recomputation is about
``(1 + roi / block) ** ndim - 1`` of the work, hence blocks of several windows per axis.

Except along the first axis, when blocks are predicted one after the other
(:meth:`BlockPlan.blocks`): a block whose predecessor along the first axis (the block before it
in the same *column*) was just predicted is *carried*. The predecessor accumulated its windows'
outputs a little past its core too (its *spill*), and the carried block starts from those sums
and runs only the windows starting in its core, so no window runs twice; a voxel still receives
the same windows in the same order. Slabs along the first axis (blocks spanning the other axes
whole) then cost no recomputation at all.

An axis shorter than the window gets one window and is reflection-padded up to it.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from bioim2im.prediction.blockwise.windows import pad_widths, window_starts

# Voxels of a default block core: 128 MiB per float32 channel, a few windows per axis.
DEFAULT_BLOCK_VOXELS = 2**25


@dataclass(frozen=True)
class HeadGeometry:
    """How a head's output window relates to its input window.

    ``scale`` is the number of output voxels per input voxel along each spatial axis (2 for a
    head that upsamples that axis twice). ``dropped_axes`` are the spatial axes (indices into the
    spatial axes) the head collapses, e.g. ``(0,)`` for a 3D->2D projection that drops Z; windows
    stacked along a dropped axis are averaged, and blocks span dropped axes whole.
    """

    scale: tuple[int, ...]
    dropped_axes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if any(int(f) != f or f < 1 for f in self.scale):
            raise ValueError(f"scale factors must be positive integers, got {self.scale}")
        if any(not 0 <= a < len(self.scale) for a in self.dropped_axes):
            raise ValueError(
                f"dropped axes {self.dropped_axes} are not among {len(self.scale)} axes"
            )

    @classmethod
    def same(cls, ndim: int) -> HeadGeometry:
        """An output on the input's grid."""
        return cls(scale=(1,) * ndim)

    @property
    def kept_axes(self) -> tuple[int, ...]:
        return tuple(a for a in range(len(self.scale)) if a not in self.dropped_axes)

    def output_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape of this head's output for an input of ``spatial_shape``."""
        return tuple(spatial_shape[a] * self.scale[a] for a in self.kept_axes)

    def output_region(self, region: Sequence[slice]) -> tuple[slice, ...]:
        """The spatial region of this head's output that covers the input ``region``."""
        return tuple(
            slice(region[a].start * self.scale[a], region[a].stop * self.scale[a])
            for a in self.kept_axes
        )


@dataclass(frozen=True)
class Block:
    """One block: the core it finishes, the region it reads and the windows it runs.

    ``core`` and ``read`` are spatial regions of the image. The read region is reflection-padded
    by ``pad`` (only along axes shorter than the window); ``window_starts`` (per axis) and
    ``core_start`` are positions in that padded array.
    """

    index: int
    core: tuple[slice, ...]
    read: tuple[slice, ...]
    pad: tuple[tuple[int, int], ...]
    window_starts: tuple[tuple[int, ...], ...]
    core_start: tuple[int, ...]
    carried: bool = False
    """It continues from the sums its predecessor along the first axis spilled into its core and
    runs only the windows starting in its core along that axis."""
    spill: int = 0
    """Voxels past the core along the first axis over which it accumulates, for its carried
    successor."""

    @property
    def core_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.core)

    def windows(self) -> Iterator[tuple[int, ...]]:
        """The start of every window, in the order of the whole-image grid."""
        return itertools.product(*self.window_starts)

    @property
    def n_windows(self) -> int:
        return math.prod(len(s) for s in self.window_starts)


@dataclass(frozen=True)
class BlockPlan:
    """The global window grid of an image and its division into blocks (C order)."""

    shape: tuple[int, ...]
    roi_size: tuple[int, ...]
    overlap: tuple[float, ...]
    block_size: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]
    starts: tuple[tuple[int, ...], ...]
    """Window starts per axis in the padded image."""

    @property
    def grid(self) -> tuple[int, ...]:
        """Blocks per axis."""
        return tuple(math.ceil(n / b) for n, b in zip(self.shape, self.block_size, strict=True))

    def __len__(self) -> int:
        return math.prod(self.grid)

    def __iter__(self) -> Iterator[Block]:
        return (self.block(i) for i in range(len(self)))

    def core(self, index: int) -> tuple[slice, ...]:
        """The spatial region block ``index`` finishes."""
        position = np.unravel_index(index, self.grid)
        return tuple(
            slice(int(p) * b, min((int(p) + 1) * b, n))
            for p, b, n in zip(position, self.block_size, self.shape, strict=True)
        )

    def block(self, index: int, carried: bool = False, spill: int = 0) -> Block:
        """Block ``index``, running every window that touches its core (or, ``carried``, only
        those starting in its core along the first axis) and accumulating ``spill`` voxels past
        its core along the first axis."""
        if not 0 <= index < len(self):
            raise IndexError(f"block {index} is not among the {len(self)} blocks")
        core = self.core(index)
        read, pad, starts, core_start = [], [], [], []
        for axis, region in enumerate(core):
            roi, size, before = self.roi_size[axis], self.shape[axis], self.pad[axis][0]
            ws = self._windows(axis, region, carried and axis == 0)
            lo = region.start + before
            # A carried block may start no window at all: it only finishes the carried sums.
            origin, end = (ws[0], ws[-1] + roi) if ws else (lo, lo)
            read.append(slice(max(origin - before, 0), min(end - before, size)))
            pad.append((max(before - origin, 0), max(end - before - size, 0)) if ws else (0, 0))
            starts.append(tuple(w - origin for w in ws))
            core_start.append(lo - origin)
        return Block(
            index, core, tuple(read), tuple(pad), tuple(starts), tuple(core_start), carried, spill
        )

    def _windows(self, axis: int, region: slice, carried: bool) -> tuple[int, ...]:
        """Starts (padded coordinates) of the windows [w, w + roi) that touch the core [lo, hi)
        along ``axis``, or that start in it when ``carried``."""
        roi, before = self.roi_size[axis], self.pad[axis][0]
        lo, hi = region.start + before, region.stop + before
        first = bisect.bisect_left(self.starts[axis], lo if carried else lo - roi + 1)
        last = bisect.bisect_left(self.starts[axis], hi)
        return self.starts[axis][first:last]

    def blocks(self, indices: Iterable[int]) -> Iterator[Block]:
        """The blocks ``indices`` (increasing) as one pass predicts them in this order: a block
        whose predecessor along the first axis is also in the pass is carried."""
        chosen = sorted(set(indices))
        present = set(chosen)
        layer = math.prod(self.grid[1:])  # blocks between a block and its successor
        before, size = self.pad[0][0], self.shape[0]
        spilled: dict[int, int] = {}  # block -> voxels of sums its predecessor hands it
        for index in chosen:
            carried = index - layer in present
            core = self.core(index)[0]
            spill = 0
            if index + layer in present:
                # Everything its windows (or the carried sums) reach past its core, within the image.
                ws = self._windows(0, core, carried)
                reach = ws[-1] + self.roi_size[0] - before if ws else core.stop
                reach = max(reach, core.start + spilled.pop(index, 0))
                spill = max(0, min(reach, size) - core.stop)
                spilled[index + layer] = spill
            else:
                spilled.pop(index, None)
            yield self.block(index, carried, spill)

    def fingerprint(self) -> dict[str, list[int] | list[float]]:
        """What block indices mean: a resumed run may reuse finished blocks only if this matches."""
        return {
            "shape": list(self.shape),
            "roi_size": list(self.roi_size),
            "overlap": list(self.overlap),
            "block_size": list(self.block_size),
        }


def default_block_size(
    roi_size: Sequence[int], voxels: int = DEFAULT_BLOCK_VOXELS
) -> tuple[int, ...]:
    """A block core of the same number of windows along each axis, at least two, within ``voxels``."""
    per_axis = (voxels / math.prod(roi_size)) ** (1 / len(roi_size))
    windows = max(2, math.floor(per_axis + 1e-9))
    return tuple(r * windows for r in roi_size)


def plan_blocks(
    shape: Sequence[int],
    roi_size: Sequence[int],
    overlap: float | Sequence[float] = 0.25,
    block_size: Sequence[int] | None = None,
    chunk_size: Sequence[int] | None = None,
    whole_axes: Sequence[int] = (),
) -> BlockPlan:
    """Plan the windows and blocks of an image of spatial ``shape``.

    ``block_size`` is the core size per axis (default :func:`default_block_size`); it is rounded
    up to a multiple of ``chunk_size`` so that blocks write whole output chunks, and it spans the
    ``whole_axes`` (e.g. an axis a head projects away) and never exceeds the image.
    """
    ndim = len(shape)
    shape = tuple(int(n) for n in shape)
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != ndim:
        raise ValueError(
            f"roi_size {roi} has {len(roi)} numbers but the image has {ndim} spatial axes"
        )
    overlaps = (float(overlap),) * ndim if isinstance(overlap, (int, float)) else tuple(overlap)
    if len(overlaps) != ndim:
        raise ValueError(f"overlap {overlap} has {len(overlaps)} numbers but there are {ndim} axes")
    size = tuple(default_block_size(roi) if block_size is None else (int(b) for b in block_size))
    if len(size) != ndim or any(b < 1 for b in size):
        raise ValueError(f"block_size must be {ndim} positive numbers, got {block_size}")
    if chunk_size is not None:
        size = tuple(math.ceil(b / c) * c for b, c in zip(size, chunk_size, strict=True))
    size = tuple(
        n if axis in whole_axes else max(min(b, n), 1)
        for axis, (b, n) in enumerate(zip(size, shape, strict=True))
    )
    pad = tuple(pad_widths(n, r) for n, r in zip(shape, roi, strict=True))
    starts = tuple(
        tuple(window_starts(n + sum(p), r, o))
        for n, p, r, o in zip(shape, pad, roi, overlaps, strict=True)
    )
    return BlockPlan(shape, roi, overlaps, size, pad, starts)
