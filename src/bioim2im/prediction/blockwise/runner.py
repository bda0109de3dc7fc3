"""Out-of-core sliding-window prediction: read, predict and write an image block by block.

Three threads overlap the work: a reader prefetches the next blocks (lazy reads from disk and
normalisation), the calling thread runs the windows through the model, and a writer hands the
finished blocks to the sink. Bounded queues between them keep at most
:func:`blocks_in_flight` blocks in memory whatever the size of the image. See
:mod:`bioim2im.prediction.blockwise.blocks` for why the block-wise result equals a whole-image prediction.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import math
import queue
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from bioim2im.io.base import InMemoryImage
from bioim2im.prediction.blockwise.blocks import (
    Block,
    BlockPlan,
    HeadGeometry,
    OpenBlock,
    bounding_box,
    plan_blocks,
)
from bioim2im.prediction.blockwise.layout import Choice, Layout
from bioim2im.prediction.blockwise.windows import (
    halo_interior_ends,
    importance_map,
    importance_profiles,
)


def blocks_in_flight(batch_size: int) -> int:
    """Most blocks alive at once: one being read, one queued, those holding the windows of one
    batch (a batch may end one block and span the next ones, at most ``batch_size + 1``), one
    queued for writing and one being written."""
    return 4 + batch_size + 1


Sink = Callable[[int, dict[str, tuple[slice, ...]], dict[str, np.ndarray]], None]
"""Receives ``(block_index, region per head, array per head)`` for each finished block; regions
index the head's full output ``(channels, *spatial)``."""

Progress = Callable[[int, int], None]
"""Called with ``(blocks written, blocks to write)`` after each block."""


class ReadableImage(Protocol):
    """What prediction needs from an image: its shape and region reads (a LazyImage fits)."""

    shape: tuple[int, ...]

    def read(self, region: tuple[slice, ...] | None = None) -> np.ndarray: ...


def predict_blocks(
    model: torch.nn.Module,
    image: ReadableImage,
    *,
    roi_size: Sequence[int] | None = None,
    out_channels: Mapping[str, int],
    sink: Sink,
    plan: BlockPlan | None = None,
    spatial_axes: Sequence[int] | None = None,
    overlap: float | Sequence[float] = 0.25,
    blend: str = "gaussian",
    batch_size: int = 4,
    tta: bool | Sequence[Sequence[int]] = False,
    device: str | torch.device = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: Choice = False,
    compile: Choice = False,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    head_geometry: Mapping[str, HeadGeometry] | None = None,
    block_size: Sequence[int] | None = None,
    chunk_size: Sequence[int] | None = None,
    skip_blocks: Collection[int] = (),
    progress: Progress | None = None,
    halo: Sequence[int] | None = None,
    align: Sequence[int] | int = 1,
    exact: bool = False,
) -> None:
    """Predict ``image`` with a Gaussian- (or constant-) blended sliding window, block by block.

    ``spatial_axes`` are the image's spatial axes (default: its last ``len(roi_size)``); the other
    axes are read whole and flattened, in order, into the model's input channels. Each block is
    read as channel-first float32 and passed through ``prepare`` (normalisation); ``prepare`` must
    treat voxels independently of the block (statistics computed beforehand on the whole image),
    or blocks would be normalised differently.

    ``model`` (in eval mode) maps a batch ``(B, C_in, *roi_size)`` to a dict head -> tensor
    ``(B, out_channels[head], *output window)``; a plain tensor is accepted for a single head.
    ``head_geometry`` gives heads whose output is upsampled or drops an axis (default: same
    grid). ``tta`` averages over flips: True = every combination of spatial axes, or a list of
    axis subsets (the unflipped input always counts). ``amp_dtype`` (e.g. ``torch.bfloat16``)
    runs the model under autocast. ``channels_last`` runs it in the channels-last layout, or
    ``"auto"``: in the faster of the two, measured on the first batches; ``compile`` runs it
    through ``torch.compile``, or ``"auto"``: when that saves more than it costs
    (:mod:`~bioim2im.prediction.blockwise.layout`).

    The blocks are ``plan`` (a caller that planned them already passes its plan, which fixes
    the window size and overlap too), else :func:`~bioim2im.prediction.blockwise.blocks.plan_blocks`
    of the spatial shape with ``roi_size``, ``overlap``, ``block_size`` and ``chunk_size``
    (spanning axes a head drops). ``skip_blocks`` are left out (already written by an
    interrupted run). Each finished block goes to ``sink``. ``halo`` and ``align`` (for a
    network whose output does not depend on the window beyond its receptive field): only the
    windows' interiors count, as :func:`~bioim2im.prediction.blockwise.blocks.plan_blocks` says.

    ``exact`` gives the blocks predicted the values one pass over every block of the plan gives
    them, bit for bit, whatever is skipped (:mod:`~bioim2im.prediction.blockwise.replay`): a
    block's values then depend on nothing but the plan, whichever process predicts it with
    whichever others. It runs again the windows skipped blocks hand on to predicted ones.
    """
    if plan is None and roi_size is None:
        raise ValueError("give the window size (roi_size) or a block plan")
    ndim = len(plan.roi_size if plan is not None else roi_size)  # type: ignore[arg-type]
    axes = _spatial_axes(spatial_axes, len(image.shape), ndim)
    heads = _head_geometries(out_channels, head_geometry, ndim)
    dropped = sorted({a for geometry in heads.values() for a in geometry.dropped_axes})
    shape = tuple(image.shape[a] for a in axes)
    if plan is None:
        plan = plan_blocks(
            shape,
            roi_size,  # type: ignore[arg-type]
            overlap,
            block_size,
            chunk_size,
            whole_axes=dropped,
            halo=halo,
            align=align,
        )
    elif plan.shape != shape or any(plan.block_size[a] != shape[a] for a in dropped):
        raise ValueError(
            f"the block plan (shape {plan.shape}, blocks {plan.block_size}) does not fit an image "
            f"of spatial shape {shape} whose heads drop axes {dropped}"
        )
    skip = set(skip_blocks)
    todo = [i for i in range(len(plan)) if i not in skip]
    windows = _WindowRunner(
        model,
        plan,
        out_channels,
        heads,
        blend,
        batch_size,
        _flip_sets(tta, ndim),
        device,
        amp_dtype,
        channels_last,
        compile,
    )

    def read(block: Block) -> np.ndarray:
        if block.n_windows == 0:
            # A carried block starting no window of its own only finishes the carried sums.
            return np.zeros((0,) * (ndim + 1), np.float32)
        return _read_block(image, block, axes, prepare, plan.pad_mode)

    def write(block: Block, arrays: dict[str, np.ndarray]) -> None:
        regions = {
            head: (slice(0, out_channels[head]), *geometry.output_region(block.core))
            for head, geometry in heads.items()
        }
        sink(block.index, regions, arrays)

    try:
        if exact and skip:
            from bioim2im.prediction.blockwise.replay import replay_blocks

            parts, replayed = replay_blocks(plan, batch_size, todo)
            _run_pipeline(
                iter(parts),
                read,
                lambda items: replayed(windows, items),
                write,
                len(todo),
                progress,
            )
        else:
            _run_pipeline(plan.blocks(todo), read, windows.run, write, len(todo), progress)
    finally:
        windows.close()


def predict_array(
    model: torch.nn.Module,
    array: np.ndarray,
    *,
    roi_size: Sequence[int],
    out_channels: Mapping[str, int],
    spatial_axes: Sequence[int] | None = None,
    head_geometry: Mapping[str, HeadGeometry] | None = None,
    **options: Any,
) -> dict[str, np.ndarray]:
    """:func:`predict_blocks` of an in-memory array; returns each head's ``(C, *spatial)`` output."""
    array = np.asarray(array)
    ndim = len(roi_size)
    axes = _spatial_axes(spatial_axes, array.ndim, ndim)
    spatial_shape = [array.shape[a] for a in axes]
    outputs = {
        head: np.empty((out_channels[head], *geometry.output_shape(spatial_shape)), np.float32)
        for head, geometry in _head_geometries(out_channels, head_geometry, ndim).items()
    }

    def sink(
        index: int, regions: dict[str, tuple[slice, ...]], arrays: dict[str, np.ndarray]
    ) -> None:
        for head, values in arrays.items():
            outputs[head][regions[head]] = values

    predict_blocks(
        model,
        InMemoryImage(array),
        roi_size=roi_size,
        out_channels=out_channels,
        sink=sink,
        spatial_axes=axes,
        head_geometry=head_geometry,
        **options,
    )
    return outputs


def _spatial_axes(
    spatial_axes: Sequence[int] | None, image_ndim: int, ndim: int
) -> tuple[int, ...]:
    if spatial_axes is None:
        return tuple(range(image_ndim - ndim, image_ndim))
    axes = tuple(a % image_ndim for a in spatial_axes)
    if len(axes) != ndim or len(set(axes)) != ndim:
        raise ValueError(
            f"spatial_axes {tuple(spatial_axes)} must be {ndim} distinct axes (one per roi_size)"
        )
    return axes


def _head_geometries(
    out_channels: Mapping[str, int], head_geometry: Mapping[str, HeadGeometry] | None, ndim: int
) -> dict[str, HeadGeometry]:
    geometries = dict(head_geometry or {})
    unknown = set(geometries) - set(out_channels)
    if unknown:
        raise ValueError(
            f"head_geometry names heads {sorted(unknown)} that are not in out_channels"
        )
    heads = {head: geometries.get(head, HeadGeometry.same(ndim)) for head in out_channels}
    for head, geometry in heads.items():
        if len(geometry.scale) != ndim:
            raise ValueError(
                f"head {head!r}: geometry has {len(geometry.scale)} axes, the windows {ndim}"
            )
        beyond = [c for c, _ in geometry.directions if c >= out_channels[head]]
        if beyond:
            raise ValueError(
                f"head {head!r}: directions name channels {beyond}, but it has "
                f"{out_channels[head]} channels"
            )
    return heads


def _flip_sets(tta: bool | Sequence[Sequence[int]], ndim: int) -> list[tuple[int, ...]]:
    """The axis subsets to flip; the empty one (no flip) first."""
    if tta is False:
        return [()]
    if tta is True:
        return [c for k in range(ndim + 1) for c in itertools.combinations(range(ndim), k)]
    flips: list[tuple[int, ...]] = [()]
    for subset in tta:
        axes = tuple(sorted(set(subset)))
        if any(not 0 <= a < ndim for a in axes):
            raise ValueError(
                f"tta flips axes {list(subset)}, but the windows have axes 0..{ndim - 1}"
            )
        if axes not in flips:
            flips.append(axes)
    return flips


def _read_block(
    image: ReadableImage,
    block: Block,
    spatial_axes: tuple[int, ...],
    prepare: Callable[[np.ndarray], np.ndarray] | None,
    pad_mode: str = "reflect",
) -> np.ndarray:
    """The block's read region as channel-first float32, prepared and padded to its windows."""
    region = [slice(None)] * len(image.shape)
    for axis, extent in zip(spatial_axes, block.read, strict=True):
        region[axis] = extent
    data = np.asarray(image.read(tuple(region)))
    other = [a for a in range(data.ndim) if a not in spatial_axes]
    data = data.transpose(*other, *spatial_axes)
    data = data.reshape(-1, *data.shape[len(other) :]).astype(np.float32)
    if prepare is not None:
        data = np.asarray(prepare(data), dtype=np.float32)
    if any(before or after for before, after in block.pad):
        data = np.pad(data, ((0, 0), *block.pad), mode=pad_mode)  # type: ignore[call-overload]
    return np.ascontiguousarray(data)


class _WindowRunner:
    """Runs a block's windows through the model and blends them over the block's core.

    Sums its windows spill into later blocks of the pass are kept (``pending``) until those
    blocks finish (see :mod:`bioim2im.prediction.blockwise.blocks`). The weights' sums (the
    blending's denominators) are not carried: they are products of per-axis sums, computed for
    each core.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        plan: BlockPlan,
        out_channels: Mapping[str, int],
        heads: Mapping[str, HeadGeometry],
        blend: str,
        batch_size: int,
        flips: list[tuple[int, ...]],
        device: str | torch.device,
        amp_dtype: torch.dtype | None,
        channels_last: Choice = False,
        compile: Choice = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.plan = plan
        self.roi = plan.roi_size
        self.before = tuple(p[0] for p in plan.pad)
        self.out_channels = dict(out_channels)
        self.heads = dict(heads)
        self.batch_size = batch_size
        self.flips = flips
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        windows = math.prod(len(starts) for starts in plan.starts)
        self.layout = Layout(
            model,
            len(plan.roi_size),
            self.device,
            channels_last,
            batch_size,
            compile=compile,
            batches=windows // batch_size,
        )
        self.windows = {head: self._output_window(head) for head in heads}
        halos = {head: self._output_halo(head) for head in heads}
        self.profiles = {
            head: importance_profiles(blend, window, halos[head])
            for head, window in self.windows.items()
        }
        self.weights = {
            head: torch.from_numpy(importance_map(blend, window, halos[head])).to(self.device)
            for head, window in self.windows.items()
        }
        # With a halo, per axis and window start (in the padded image): where its interior
        # stops counting (the next window's interior takes over, see halo_interior_ends).
        self.interior_ends = (
            None
            if plan.halo is None
            else [
                halo_interior_ends(starts, roi, halo)
                for starts, roi, halo in zip(plan.starts, plan.roi_size, plan.halo, strict=True)
            ]
        )
        self._cut_weights: dict[tuple[str, bool, tuple[int, ...]], torch.Tensor] = {}
        # Vector components change sign when their axis is flipped: (head, flipped axes) -> signs.
        self.signs: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
        for head, geometry in self.heads.items():
            for axes in flips:
                signs = geometry.flip_signs(self.out_channels[head], axes)
                if signs is not None:
                    shape = (1, len(signs)) + (1,) * len(geometry.kept_axes)
                    self.signs[head, axes] = torch.from_numpy(signs).view(shape).to(self.device)
        # Sums handed on to later blocks: block -> face -> (region of its core, sums per head).
        self.pending: dict[int, dict[int, tuple[tuple[slice, ...], dict[str, torch.Tensor]]]] = {}

    def _output_window(self, head: str) -> tuple[int, ...]:
        geometry = self.heads[head]
        return tuple(self.roi[a] * geometry.scale[a] for a in geometry.kept_axes)

    def _output_halo(self, head: str) -> tuple[int, ...] | None:
        if self.plan.halo is None:
            return None
        geometry = self.heads[head]
        return tuple(self.plan.halo[a] * geometry.scale[a] for a in geometry.kept_axes)

    def run(
        self, blocks: Iterable[tuple[Block, np.ndarray]]
    ) -> Iterator[tuple[Block, dict[str, np.ndarray]]]:
        """Predict ``(block, data)`` in order; yield each block with its outputs over its core.

        Windows go through the model in full batches across block borders (a batch may end one
        block and span the next ones: a partial batch costs nearly as much as a full one), with
        at most ``batch_size + 1`` blocks open at once.
        """
        source = iter(blocks)
        opened: collections.deque[OpenBlock] = collections.deque()
        queued: collections.deque[tuple[OpenBlock, tuple[int, ...]]] = collections.deque()
        exhausted = False
        with torch.inference_mode():
            while True:
                while (
                    not exhausted
                    and len(queued) < self.batch_size
                    and len(opened) <= self.batch_size
                ):
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    current = self._open(*item)
                    del item
                    opened.append(current)
                    queued.extend((current, start) for start in current.block.windows)
                if queued:
                    size = min(self.batch_size, len(queued))
                    self._run_batch([queued.popleft() for _ in range(size)])
                # Blocks whose windows have all run are finished, in order.
                while opened and opened[0].left == 0:
                    yield self._finish(opened.popleft())
                if exhausted and not opened:
                    return

    def _open(self, block: Block, data: np.ndarray) -> OpenBlock:
        sums = self._zeros(block)
        return OpenBlock(block, torch.from_numpy(data).to(self.device), sums, block.n_windows)

    def _zeros(self, block: Block) -> dict[str, torch.Tensor]:
        """Per head, zeroed sums over the block's reach."""
        extent = tuple(r.stop - r.start for r in block.reach)
        return {
            head: torch.zeros(
                (self.out_channels[head], *geometry.output_shape(extent)), device=self.device
            )
            for head, geometry in self.heads.items()
        }

    def _run_batch(self, batch: list[tuple[OpenBlock, tuple[int, ...]]]) -> None:
        outputs = self._forward(
            torch.stack([self._crop(current.image, start) for current, start in batch])
        )
        for head, output in outputs.items():
            weighted = self._weighted(head, output, [(c.block, start) for c, start in batch])
            for i, (current, start) in enumerate(batch):
                src, dst = self._placement(head, current.block, start)
                window: tuple[int | slice, ...] = (i, *src)
                current.sums[head][dst] += weighted[window]
        for current, _ in batch:
            current.left -= 1

    def _weighted(
        self, head: str, output: torch.Tensor, windows: Sequence[tuple[Block, tuple[int, ...]]]
    ) -> torch.Tensor:
        """A batch of the head's outputs times each window's weights (``(block, start in the
        block's data)`` per window)."""
        if self.interior_ends is None:
            return output * self.weights[head]
        weights = torch.stack([self._window_weights(head, b, s) for b, s in windows])
        return output * weights[:, None]

    def _profile(self, head: str, axis: int, start: int) -> np.ndarray:
        """The head's weights along a kept ``axis`` for the window starting at ``start`` (in
        the padded image): with a halo, zero past where its interior stops counting."""
        geometry = self.heads[head]
        profile = self.profiles[head][geometry.kept_axes.index(axis)]
        if self.interior_ends is None:
            return profile
        end = self.interior_ends[axis][start] * geometry.scale[axis]
        if end >= len(profile):
            return profile
        cut = profile.copy()
        cut[end:] = 0
        return cut

    def _window_weights(self, head: str, block: Block, start: tuple[int, ...]) -> torch.Tensor:
        """The head's weights for one window (``start`` in the block's data). Along an axis
        the head drops, only the last window counts, as bioimageio.core's last block overwrites
        the output the others wrote there."""
        geometry = self.heads[head]
        padded = tuple(s + o for s, o in zip(start, block.origin, strict=True))
        assert self.interior_ends is not None
        last = all(padded[a] == self.plan.starts[a][-1] for a in geometry.dropped_axes)
        key = (head, last, tuple(self.interior_ends[a][padded[a]] for a in geometry.kept_axes))
        if key not in self._cut_weights:
            profiles = [self._profile(head, a, padded[a]) for a in geometry.kept_axes]
            weights = functools.reduce(np.multiply.outer, profiles).astype(np.float32)
            self._cut_weights[key] = torch.from_numpy(weights * float(last)).to(self.device)
        return self._cut_weights[key]

    def _finish(self, current: OpenBlock) -> tuple[Block, dict[str, np.ndarray]]:
        """Add what earlier blocks handed on, hand on what is due to later ones, and return the
        blended core."""
        block, sums, reach = current.block, current.sums, current.block.reach
        for region, handed in self.pending.pop(block.index, {}).values():
            for head, values in handed.items():
                sums[head][self._within(head, region, reach)] += values
        self._hand_on_all(current)
        norms = self._weight_sums(block)
        return block, {
            head: (sums[head][self._within(head, block.core, reach)] / norms[head]).cpu().numpy()
            for head in self.heads
        }

    def _hand_on_all(self, current: OpenBlock) -> None:
        """Hand on the block's sums over the cores of the later blocks its windows reach."""
        block, sums, reach = current.block, current.sums, current.block.reach
        for target, face, region in block.hands_on:
            self._hand_on(
                target,
                face,
                region,
                {head: sums[head][self._within(head, region, reach)] for head in self.heads},
            )

    def close(self) -> None:
        self.layout.restore()

    def _hand_on(
        self, target: int, face: int, region: tuple[slice, ...], values: dict[str, torch.Tensor]
    ) -> None:
        """Add ``values`` over ``region`` to the sums held for block ``target``.

        One box of sums per face of the block, grown to hold each new region: the blocks behind
        one face hand on slabs along it, which one box holds with little to spare (a box around
        the slabs of several faces would hold the block's whole core).
        """
        held_by_face = self.pending.setdefault(target, {})
        if face not in held_by_face:
            held_by_face[face] = (region, {head: v.clone() for head, v in values.items()})
            return
        box, held = held_by_face[face]
        grown = bounding_box(box, region)
        if grown != box:
            larger = {}
            for head, geometry in self.heads.items():
                shape = geometry.output_shape(tuple(r.stop - r.start for r in grown))
                larger[head] = held[head].new_zeros((held[head].shape[0], *shape))
                larger[head][self._within(head, box, grown)] = held[head]
            box, held = grown, larger
            held_by_face[face] = (box, held)
        for head, v in values.items():
            held[head][self._within(head, region, box)] += v

    def _crop(self, image: torch.Tensor, start: tuple[int, ...]) -> torch.Tensor:
        window = (slice(s, s + r) for s, r in zip(start, self.roi, strict=True))
        return image[(slice(None), *window)]

    def _within(
        self, head: str, region: tuple[slice, ...], reach: tuple[slice, ...]
    ) -> tuple[slice, ...]:
        """Where ``region`` lies in a head's sums over ``reach`` (both image regions)."""
        geometry = self.heads[head]
        return (
            slice(None),
            *(
                slice(
                    (region[a].start - reach[a].start) * geometry.scale[a],
                    (region[a].stop - reach[a].start) * geometry.scale[a],
                )
                for a in geometry.kept_axes
            ),
        )

    def _placement(
        self, head: str, block: Block, start: tuple[int, ...]
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """(part of the window's output, where it goes in the sums over the block's reach)."""
        geometry = self.heads[head]
        src: list[slice] = [slice(None)]
        dst: list[slice] = [slice(None)]
        for a in geometry.kept_axes:
            f, region = geometry.scale[a], block.reach[a]
            first = start[a] + block.origin[a] - self.before[a]  # in the image
            lo, hi = max(first, region.start), min(first + self.roi[a], region.stop)
            src.append(slice((lo - first) * f, (hi - first) * f))
            dst.append(slice((lo - region.start) * f, (hi - region.start) * f))
        return tuple(src), tuple(dst)

    def _weight_sums(self, block: Block) -> dict[str, torch.Tensor]:
        """Per head, the sum of the weights of every window over the block's core.

        The weights are a product of per-axis profiles, so their sum over a grid of windows is
        the product of per-axis sums: no window needs visiting.
        """
        norms = {}
        for head, geometry in self.heads.items():
            factors = []
            for a in geometry.kept_axes:
                f, region = geometry.scale[a], block.core[a]
                total = np.zeros((region.stop - region.start) * f, np.float64)
                for start in self.plan.starts[a]:
                    profile = self._profile(head, a, start)
                    first = start - self.before[a]  # in the image
                    lo, hi = max(first, region.start), min(first + self.roi[a], region.stop)
                    if lo < hi:
                        total[(lo - region.start) * f : (hi - region.start) * f] += profile[
                            (lo - first) * f : (hi - first) * f
                        ]
                factors.append(total)
            # Windows stacked along an axis the head drops each add their weights again (with
            # a halo, only the last one counts).
            stacked = (
                math.prod(len(self.plan.starts[a]) for a in geometry.dropped_axes)
                if self.interior_ends is None
                else 1
            )
            norm = np.full((), stacked, np.float64)
            for factor in factors:
                norm = np.multiply.outer(norm, factor)
            norms[head] = torch.from_numpy(norm.astype(np.float32)).to(self.device)
        return norms

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's outputs for ``batch`` in float32, averaged over the TTA flips."""
        totals: dict[str, torch.Tensor] = {}
        owned: set[str] = set()  # heads whose totals are sums made here
        with self.layout.timed(tuple(batch.shape)) as model:
            for axes in self.flips:
                inputs = torch.flip(batch, [2 + a for a in axes]) if axes else batch
                autocast = (
                    torch.autocast(self.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None
                    else contextlib.nullcontext()
                )
                with autocast:
                    outputs = self._as_dict(model(self.layout.prepare(inputs)))
                for head, geometry in self.heads.items():
                    output = outputs[head].float()
                    expected = (len(batch), self.out_channels[head], *self.windows[head])
                    if tuple(output.shape) != expected:
                        raise ValueError(
                            f"the model's {head!r} output has shape {tuple(output.shape)}, "
                            f"expected {expected}"
                        )
                    kept = geometry.kept_axes
                    unflip = [2 + kept.index(a) for a in axes if a in kept]
                    if unflip:
                        output = torch.flip(output, unflip)
                    signs = self.signs.get((head, axes))
                    if signs is not None:
                        output = output * signs
                    if head not in totals:
                        totals[head] = output  # may be the model's own tensor: not changed
                    elif head in owned:
                        totals[head] += output
                    else:
                        totals[head] = totals[head] + output
                        owned.add(head)
        # Without TTA the outputs go on as they are (no copy); with it, the sums are ours.
        for head in owned:
            totals[head] /= len(self.flips)
        return totals

    def _as_dict(self, outputs: Any) -> Mapping[str, torch.Tensor]:
        if isinstance(outputs, torch.Tensor) and len(self.heads) == 1:
            return {next(iter(self.heads)): outputs}
        if not isinstance(outputs, Mapping):
            raise TypeError(
                f"the model must return a dict head -> tensor, got {type(outputs).__name__}"
            )
        missing = set(self.heads) - set(outputs)
        if missing:
            raise ValueError(f"the model's outputs lack heads {sorted(missing)}")
        return outputs


def _batched(items: Iterable[tuple[int, ...]], size: int) -> Iterator[list[tuple[int, ...]]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# Pipeline markers: the producer has no more items / the pipeline is stopping after an error.
_END = object()
_STOPPED = object()
_POLL_SECONDS = 0.05


def _run_pipeline(
    blocks: Iterable[Block],
    read: Callable[[Block], np.ndarray],
    predict: Callable[
        [Iterator[tuple[Block, np.ndarray]]], Iterator[tuple[Block, dict[str, np.ndarray]]]
    ],
    write: Callable[[Block, dict[str, np.ndarray]], None],
    total: int,
    progress: Progress | None,
) -> None:
    """Read in one thread, predict in this one, write in another; re-raise the first error."""
    stop = threading.Event()
    errors: list[BaseException] = []
    # Each queue holds one block; with the blocks each thread holds, blocks_in_flight() in all.
    to_predict: queue.Queue[Any] = queue.Queue(maxsize=1)
    to_write: queue.Queue[Any] = queue.Queue(maxsize=1)

    def reader() -> None:
        try:
            for block in blocks:
                if not _put(to_predict, (block, read(block)), stop):
                    return
            _put(to_predict, _END, stop)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    def writer() -> None:
        try:
            done = 0
            while (item := _get(to_write, stop)) is not _END and item is not _STOPPED:
                write(*item)
                done += 1
                if progress is not None:
                    progress(done, total)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=reader, name="bioim2im-read", daemon=True),
        threading.Thread(target=writer, name="bioim2im-write", daemon=True),
    ]
    for thread in threads:
        thread.start()

    def incoming() -> Iterator[tuple[Block, np.ndarray]]:
        while (item := _get(to_predict, stop)) is not _END and item is not _STOPPED:
            yield item
            del item

    try:
        for block, result in predict(incoming()):
            if not _put(to_write, (block, result), stop):
                break
            del result
        _put(to_write, _END, stop)
    except BaseException:
        stop.set()
        raise
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def _put(channel: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room; False when the pipeline stopped meanwhile."""
    while not stop.is_set():
        try:
            channel.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _get(channel: queue.Queue[Any], stop: threading.Event) -> Any:
    """The next item, or ``_STOPPED`` once the pipeline stopped."""
    while not stop.is_set():
        try:
            return channel.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            continue
    return _STOPPED
