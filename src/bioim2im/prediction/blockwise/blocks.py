"""Block planning: the image is predicted block by block so memory does not grow with its size.

Design: ONE window grid covers the whole image (:func:`~bioim2im.prediction.blockwise.windows.window_starts`
per axis). The image is cut into blocks; a block's *core* is the part of the output it finishes.
Every core voxel receives exactly the windows, with the same weights, that a whole-image sliding
window gives it, so the block-wise result equals the whole-image one (up to the numerical noise
of adding the same terms in another order).

No window runs twice within one pass. The blocks of a pass are predicted in *sweep order* (C
order over the grid with the axes taken in :attr:`BlockPlan.sweep` order), and each window is
run by the first block of the pass whose core it touches (:meth:`BlockPlan.blocks`). That block
accumulates the window's output over its *reach* (its core and whatever its windows cover
beyond it) and hands the parts that fall in later blocks' cores on to them (``hands_on``); a
block starts from the sums handed to it. The sums in hand at any time form a sheet about one
window thick across the image, perpendicular to the first sweep axis (plus thinner ones along
the current row and column of blocks); the sweep takes first the axis along which that sheet is
smallest.

A block predicted on its own (another process predicts its neighbours, or they were finished by
an interrupted run) runs every window touching its core: the windows across its border then run
twice, once on each side. An axis shorter than the window gets one window and is
reflection-padded up to it.

With a *halo* (a network whose output does not depend on the window it runs in, beyond its
receptive field), only each window's interior counts: its ``halo`` voxels at each end weigh 0,
the image is padded by the halo (mirrored, numpy's ``symmetric``, as bioimageio.core pads),
and windows start on multiples of the network's divisor
(:func:`~bioim2im.prediction.blockwise.windows.halo_window_starts`). Every voxel then gets the
value the network gives it on the whole padded image, whatever the windows and blocks.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from bioim2im.prediction.blockwise.windows import (
    halo_pad_widths,
    halo_window_starts,
    pad_widths,
    window_starts,
)

if TYPE_CHECKING:
    import torch

# Voxels of a default block core: 128 MiB per float32 channel, a few windows per axis.
DEFAULT_BLOCK_VOXELS = 2**25

T = TypeVar("T")


@dataclass(frozen=True)
class HeadGeometry:
    """How a head's output window relates to its input window.

    ``scale`` is the number of output voxels per input voxel along each spatial axis (2 for a
    head that upsamples that axis twice). ``dropped_axes`` are the spatial axes (indices into the
    spatial axes) the head collapses, e.g. ``(0,)`` for a 3D->2D projection that drops Z; windows
    stacked along a dropped axis are averaged, and blocks span dropped axes whole.

    ``directions`` are the ``(channel, spatial axis)`` pairs of output channels that are the
    component of a vector along a spatial axis of the input (an offset or a flow along that
    axis, possibly one the head drops): test-time augmentation that flips that axis negates them
    when it flips the output back.
    """

    scale: tuple[int, ...]
    dropped_axes: tuple[int, ...] = ()
    directions: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if any(int(f) != f or f < 1 for f in self.scale):
            raise ValueError(f"scale factors must be positive integers, got {self.scale}")
        if any(not 0 <= a < len(self.scale) for a in self.dropped_axes):
            raise ValueError(
                f"dropped axes {self.dropped_axes} are not among {len(self.scale)} axes"
            )
        for channel, axis in self.directions:
            if channel < 0 or not 0 <= axis < len(self.scale):
                raise ValueError(
                    f"direction ({channel}, {axis}): channels are 0 or more, and the axes "
                    f"0..{len(self.scale) - 1}"
                )
        if len({channel for channel, _ in self.directions}) < len(self.directions):
            raise ValueError(f"directions {self.directions} give a channel two axes")

    @classmethod
    def same(cls, ndim: int) -> HeadGeometry:
        """An output on the input's grid."""
        return cls(scale=(1,) * ndim)

    @property
    def kept_axes(self) -> tuple[int, ...]:
        return tuple(a for a in range(len(self.scale)) if a not in self.dropped_axes)

    def flip_signs(self, channels: int, axes: Iterable[int]) -> np.ndarray | None:
        """The sign each of ``channels`` output channels takes when the input is flipped along
        the spatial ``axes``: -1 for the vector components along a flipped axis; None when no
        channel changes sign."""
        flipped = set(axes)
        signs = np.ones(channels, np.float32)
        for channel, axis in self.directions:
            if axis in flipped and channel < channels:
                signs[channel] = -1.0
        return signs if (signs < 0).any() else None

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
    """One block of a pass: the core it finishes, the region it reads and the windows it runs.

    ``core``, ``read``, ``reach`` and the regions in ``hands_on`` are spatial regions of the
    image. The read region is reflection-padded by ``pad`` (only along axes shorter than the
    window); ``windows`` are the starts of the windows it runs in that padded array, and
    ``origin`` is where that array starts in the padded image.
    """

    index: int
    core: tuple[slice, ...]
    read: tuple[slice, ...]
    pad: tuple[tuple[int, int], ...]
    windows: tuple[tuple[int, ...], ...]
    """Starts of the windows it runs, in the padded read array, in the whole-image grid's order."""
    origin: tuple[int, ...]
    reach: tuple[slice, ...]
    """Where it accumulates: its core and what its windows cover beyond it, within the image."""
    hands_on: tuple[tuple[int, int, tuple[slice, ...]], ...] = ()
    """Later blocks of the pass its windows reach: ``(block, axis, region)``, the part of that
    block's core they reach (the sums it hands on), arriving across its face on ``axis`` (the
    first sweep axis along which it lies after this one)."""

    @property
    def core_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.core)

    @property
    def n_windows(self) -> int:
        return len(self.windows)

    @property
    def core_start(self) -> tuple[int, ...]:
        """Where the core starts in the padded read array."""
        return tuple(
            c.start - r.start + p[0] for c, r, p in zip(self.core, self.read, self.pad, strict=True)
        )


@dataclass(frozen=True)
class BlockPlan:
    """The global window grid of an image and its division into blocks (numbered in C order)."""

    shape: tuple[int, ...]
    roi_size: tuple[int, ...]
    overlap: tuple[float, ...]
    block_size: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]
    starts: tuple[tuple[int, ...], ...]
    """Window starts per axis in the padded image."""
    sweep: tuple[int, ...] = ()
    """The order in which a pass visits the axes, outermost first (default: C order)."""
    halo: tuple[int, ...] | None = None
    """Voxels at each end of a window that weigh 0 (the image padded by them, mirrored); None:
    every voxel of a window counts (axes shorter than the window reflection-padded)."""

    @property
    def pad_mode(self) -> str:
        """How the image is padded (numpy's mode)."""
        return "reflect" if self.halo is None else "symmetric"

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

    def sweep_order(self) -> list[int]:
        """Every block index, in the order a pass predicts them."""
        axes = self.sweep or tuple(range(len(self.shape)))
        grid = self.grid
        order = np.arange(len(self)).reshape(grid).transpose(axes)
        return [int(i) for i in order.ravel()]

    def block(self, index: int) -> Block:
        """Block ``index`` on its own: it runs every window touching its core."""
        if not 0 <= index < len(self):
            raise IndexError(f"block {index} is not among the {len(self)} blocks")
        return self._block(index, {index: 0})

    def blocks(self, indices: Iterable[int]) -> Iterator[Block]:
        """The blocks ``indices`` as one pass predicts them: in sweep order, each window run by
        the first of them whose core it touches, sums handed on to the later ones."""
        chosen = set(indices)
        for index in chosen:
            if not 0 <= index < len(self):
                raise IndexError(f"block {index} is not among the {len(self)} blocks")
        order = [i for i in self.sweep_order() if i in chosen]
        rank = {index: position for position, index in enumerate(order)}
        for index in order:
            yield self._block(index, rank)

    def touching(self, index: int) -> tuple[tuple[int, ...], ...]:
        """Per axis, the starts (padded image) of the windows that touch block ``index``'s core."""
        return tuple(
            self.starts[axis][self._touching(axis, region)]
            for axis, region in enumerate(self.core(index))
        )

    def _touching(self, axis: int, region: slice) -> slice:
        """Which of the starts along ``axis`` begin windows [w, w + roi) touching ``region``."""
        roi, before = self.roi_size[axis], self.pad[axis][0]
        lo, hi = region.start + before, region.stop + before
        first = bisect.bisect_left(self.starts[axis], lo - roi + 1)
        last = bisect.bisect_left(self.starts[axis], hi)
        return slice(first, last)

    def _block(self, index: int, rank: dict[int, int]) -> Block:
        """Block ``index`` of the pass whose blocks ``rank`` numbers in order: the windows
        touching its core that touch no earlier block of the pass."""
        ndim = len(self.shape)
        core = self.core(index)
        strides = [math.prod(self.grid[a + 1 :]) for a in range(ndim)]
        mine = rank[index]
        # Per axis: each touching window's start and the block positions its extent covers.
        candidates = []
        for axis, region in enumerate(core):
            covered = []
            for start in self.starts[axis][self._touching(axis, region)]:
                lo, hi = self._extent(axis, start)
                size = self.block_size[axis]
                covered.append((start, range(lo // size, (hi - 1) // size + 1)))
            candidates.append(covered)
        windows = []
        for combo in self.in_sweep_order(candidates):
            neighbours = itertools.product(*(positions for _, positions in combo))
            if any(
                rank.get(sum(p * s for p, s in zip(position, strides, strict=True)), mine) < mine
                for position in neighbours
            ):
                continue  # an earlier block of the pass ran it
            windows.append(tuple(start for start, _ in combo))
        return self._with_windows(index, core, windows, rank)

    def in_sweep_order(self, per_axis: Sequence[Sequence[T]]) -> Iterator[tuple[T, ...]]:
        """Every combination of one item per axis (a window's starts, say), the axes taken in
        sweep order (the last sweep axis varying fastest), each given in axis order.

        A block's windows run in this order, so the windows it hands sums on with to the next
        block along the first sweep axis are the last ones it runs, together: another process
        that needs only those (:mod:`~bioim2im.prediction.blockwise.replay`) runs them in a few
        whole batches instead of a batch at each of their rows.
        """
        axes = self.sweep or tuple(range(len(per_axis)))
        back = [axes.index(a) for a in range(len(axes))]
        for combo in itertools.product(*(per_axis[a] for a in axes)):
            yield tuple(combo[i] for i in back)

    def _extent(self, axis: int, start: int) -> tuple[int, int]:
        """The image voxels [lo, hi) a window starting at ``start`` (padded image) covers."""
        before = self.pad[axis][0]
        return max(start - before, 0), min(start - before + self.roi_size[axis], self.shape[axis])

    def _with_windows(
        self,
        index: int,
        core: tuple[slice, ...],
        windows: list[tuple[int, ...]],
        rank: dict[int, int],
    ) -> Block:
        read, pad, origin, reach = [], [], [], []
        for axis, region in enumerate(core):
            roi, size, before = self.roi_size[axis], self.shape[axis], self.pad[axis][0]
            if windows:
                first = min(w[axis] for w in windows)
                end = max(w[axis] for w in windows) + roi
            else:  # it only finishes the sums handed to it
                first = end = region.start + before
            read.append(slice(max(first - before, 0), min(end - before, size)))
            pad.append((max(before - first, 0), max(end - before - size, 0)) if windows else (0, 0))
            origin.append(first)
            reach.append(slice(min(region.start, read[-1].start), max(region.stop, read[-1].stop)))
        relative = tuple(tuple(s - o for s, o in zip(w, origin, strict=True)) for w in windows)
        return Block(
            index,
            core,
            tuple(read),
            tuple(pad),
            relative,
            tuple(origin),
            tuple(reach),
            self._hands_on(index, tuple(reach), rank),
        )

    def _hands_on(
        self, index: int, reach: tuple[slice, ...], rank: dict[int, int]
    ) -> tuple[tuple[int, int, tuple[slice, ...]], ...]:
        """The later blocks of the pass whose cores ``reach`` overlaps, across which face, and
        where."""
        mine = rank[index]
        here = np.unravel_index(index, self.grid)
        ranges = [
            range(r.start // b, (r.stop - 1) // b + 1)
            for r, b in zip(reach, self.block_size, strict=True)
        ]
        found = []
        for position in itertools.product(*ranges):
            other = int(np.ravel_multi_index(position, self.grid))
            if rank.get(other, -1) <= mine:
                continue
            face = next(a for a in self.sweep or range(len(here)) if position[a] != here[a])
            core = self.core(other)
            region = tuple(
                slice(max(r.start, c.start), min(r.stop, c.stop))
                for r, c in zip(reach, core, strict=True)
            )
            found.append((other, face, region))
        found.sort(key=lambda item: rank[item[0]])
        return tuple(found)

    def fingerprint(self) -> dict[str, list[int] | list[float]]:
        """What block indices mean: a resumed run may reuse finished blocks only if this matches."""
        found: dict[str, list[int] | list[float]] = {
            "shape": list(self.shape),
            "roi_size": list(self.roi_size),
            "overlap": list(self.overlap),
            "block_size": list(self.block_size),
        }
        if self.halo is not None:
            found["halo"] = list(self.halo)
            found["starts"] = [s[-1] for s in self.starts]
        return found


def bounding_box(a: Sequence[slice], b: Sequence[slice]) -> tuple[slice, ...]:
    """The smallest region holding regions ``a`` and ``b``."""
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )


# Copies of a block's data alive at once, per voxel it reads (its input: one being read, one
# queued, one predicted; its sums) and per voxel of its core (its outputs: one being made, one
# queued, one written, each with a postprocessed copy). See runner.blocks_in_flight.
_INPUTS_IN_FLIGHT = 3
_OUTPUTS_IN_FLIGHT = 6


def block_bytes(
    block: Sequence[int],
    shape: Sequence[int],
    roi_size: Sequence[int],
    in_channels: int,
    out_channels: float,
) -> int:
    """About the memory the blocks of ``block`` size take in flight (float32 data).

    ``out_channels`` are the output values per input voxel (every head's channels times its
    upsampling).
    """
    read = math.prod(min(b + r, n) for b, r, n in zip(block, roi_size, shape, strict=True))
    core = math.prod(block)
    values = (_INPUTS_IN_FLIGHT * in_channels + out_channels) * read
    return int(4 * (values + _OUTPUTS_IN_FLIGHT * out_channels * core))


def sheet_bytes(
    shape: Sequence[int], roi_size: Sequence[int], sweep: Sequence[int], out_channels: float
) -> int:
    """About the memory of the sums handed between blocks: one window thick across the image."""
    first = sweep[0]
    cross_section = math.prod(n for a, n in enumerate(shape) if a != first)
    return int(4 * out_channels * min(roi_size[first], shape[first]) * cross_section)


def memory_block_size(
    shape: Sequence[int],
    roi_size: Sequence[int],
    budget: int,
    *,
    in_channels: int = 1,
    out_channels: float = 1,
    chunk_size: Sequence[int] | None = None,
    whole_axes: Sequence[int] = (),
) -> tuple[int, ...]:
    """The largest block core whose data in flight fit ``budget`` bytes, with the sums handed
    between blocks.

    Starts from one window (rounded up to whole chunks) per axis and doubles the axis with the
    fewest windows per block while the memory allows: larger blocks re-read less of their
    neighbours' input, and no block size runs any window twice.
    """
    ndim = len(shape)
    chunks = tuple(chunk_size or (1,) * ndim)

    def fit(size: int, axis: int) -> int:
        if axis in whole_axes:
            return shape[axis]
        return min(math.ceil(size / chunks[axis]) * chunks[axis], shape[axis])

    block = [fit(min(r, n), a) for a, (r, n) in enumerate(zip(roi_size, shape, strict=True))]
    sweep = default_sweep(shape, roi_size)
    left = budget - sheet_bytes(shape, roi_size, sweep, out_channels)

    def cost(size: Sequence[int]) -> int:
        return block_bytes(size, shape, roi_size, in_channels, out_channels)

    while True:
        growing = sorted(
            (a for a in range(ndim) if block[a] < shape[a]),
            key=lambda a: (block[a] / roi_size[a], a),
        )
        for axis in growing:
            larger = [*block]
            larger[axis] = fit(2 * block[axis], axis)
            if cost(larger) <= left:
                block = larger
                break
        else:
            return tuple(block)


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
    sweep: Sequence[int] | None = None,
    halo: Sequence[int] | None = None,
    align: Sequence[int] | int = 1,
) -> BlockPlan:
    """Plan the windows and blocks of an image of spatial ``shape``.

    ``block_size`` is the core size per axis (default :func:`default_block_size`); it is rounded
    up to a multiple of ``chunk_size`` so that blocks write whole output chunks, and it spans the
    ``whole_axes`` (e.g. an axis a head projects away) and never exceeds the image. ``sweep``
    orders the axes for a pass, outermost first (default :func:`default_sweep`).

    ``halo`` (voxels per axis): only the windows' interiors count, they tile the image padded by
    the halo, and windows start on multiples of ``align`` (``overlap`` is not used); see
    :func:`~bioim2im.prediction.blockwise.windows.halo_window_starts`.
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
    if halo is None:
        pad = tuple(pad_widths(n, r) for n, r in zip(shape, roi, strict=True))
        starts = tuple(
            tuple(window_starts(n + sum(p), r, o))
            for n, p, r, o in zip(shape, pad, roi, overlaps, strict=True)
        )
        halos = None
    else:
        halos = tuple(int(h) for h in halo)
        aligns = (int(align),) * ndim if isinstance(align, int) else tuple(int(a) for a in align)
        if len(halos) != ndim or len(aligns) != ndim or min(halos) < 0:
            raise ValueError(f"halo {list(halo)} and align {align} need {ndim} numbers >= 0")
        starts = tuple(
            tuple(halo_window_starts(n, r, h, a))
            for n, r, h, a in zip(shape, roi, halos, aligns, strict=True)
        )
        pad = tuple(
            halo_pad_widths(n, r, h, s[-1])
            for n, r, h, s in zip(shape, roi, halos, starts, strict=True)
        )
    order = tuple(default_sweep(shape, roi) if sweep is None else (int(a) for a in sweep))
    if sorted(order) != list(range(ndim)):
        raise ValueError(f"sweep must order the axes 0..{ndim - 1}, got {sweep}")
    return BlockPlan(shape, roi, overlaps, size, pad, starts, order, halos)


def default_sweep(shape: Sequence[int], roi_size: Sequence[int]) -> tuple[int, ...]:
    """Axes with the most windows first.

    The sums a pass holds form a sheet about one window thick across the axes it has not
    finished; sweeping first along the axis with the most windows makes that sheet the smallest
    cross-section of the image, in windows.
    """
    return tuple(
        sorted(range(len(shape)), key=lambda a: (min(roi_size[a], shape[a]) / shape[a], a))
    )


@dataclass
class OpenBlock:
    """A block whose windows are running: its input, its sums and how many windows are left."""

    block: Block
    image: torch.Tensor
    sums: dict[str, torch.Tensor]
    left: int
