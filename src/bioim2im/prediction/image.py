"""Predicting one image into a store: blocks first (any process), then the neighbourhood
postprocessing steps (one process).

Blocks. The image (each time point) is cut into the blocks of
:func:`~bioim2im.prediction.blockwise.plan_blocks` (by default the largest that
``predict.memory_gb`` holds, see :func:`memory_block_size`; a pass runs no window twice whatever
their size), whose borders lie on output chunk borders, so processes sharing the work never
write the same chunk: process ``r`` of ``n`` predicts the ``r``-th contiguous share of the
blocks in sweep order (the windows across the border between two shares run in both). Each block's raw output goes through its head's pointwise
postprocessing steps, then either straight to the output or, when neighbourhood steps follow,
to a scratch array. A block is recorded as finished (``WorkDir.progress_file``) once all of
its heads are written, so an interrupted run resumes with the blocks it had not finished.

Neighbourhood steps. Once every block is written, each block of the scratch values plus a halo
of one window per side goes through the remaining steps and its core is kept. For instance
heads, :func:`~bioim2im.prediction.blockwise.label_blockwise` numbers the objects of each block after those
of the blocks before it and merges the objects cut by block borders, so object ids are unique
over the whole image; the halo lets both blocks of a border see its objects whole.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bioim2im.errors import UserError
from bioim2im.formats.trained_model import HeadOutput, TrainedModel
from bioim2im.io.images import InputImage
from bioim2im.prediction.inputs import normalizer
from bioim2im.prediction.outputs import ImageSpec, Store, WorkDir

if TYPE_CHECKING:
    from bioim2im.prediction.blockwise import BlockPlan, BlockProgress, HeadGeometry

# Spatial chunk sizes of the outputs, as the OME-Zarr writer's defaults: 256 x 256 in 2D,
# 32 x 128 x 128 in 3D.
CHUNKS = {2: (256, 256), 3: (32, 128, 128)}

Report = Callable[[int, int], None]


@dataclass(frozen=True)
class Tiling:
    """How an image is cut, planned once per image: its windows and blocks (``plan``, of one
    time point) and the output chunk size, in input voxels per axis."""

    plan: BlockPlan
    chunks: tuple[int, ...]

    @property
    def block_size(self) -> tuple[int, ...]:
        return self.plan.block_size


@dataclass
class BlockCounts:
    """Blocks of an image (over every time point): all, done by an earlier run, done now."""

    total: int = 0
    resumed: int = 0
    predicted: int = 0


def file_tiling(model: TrainedModel, found: InputImage) -> Tiling:
    """Blocks of ``predict.block_size`` (default: the largest ``predict.memory_gb`` holds);
    output chunks of the writer's default size, or of the block when that is smaller."""
    shape, defaults = found.spatial_shape, CHUNKS[len(found.spatial_shape)]
    wanted = model.preset.predict.block_size or memory_block_size(shape, model, defaults)
    chunks = tuple(max(1, min(c, b, n)) for c, b, n in zip(defaults, wanted, shape, strict=True))
    return _tiling(model, found, wanted, chunks)


def _tiling(
    model: TrainedModel, found: InputImage, block_size: Sequence[int], chunks: Sequence[int]
) -> Tiling:
    from bioim2im.prediction.blockwise import plan_blocks

    shape = found.spatial_shape
    halo_tiling = model.halo_tiling(shape)
    if halo_tiling is None:
        plan = plan_blocks(
            shape,
            model.window(shape),
            model.preset.predict.overlap,
            block_size,
            chunks,
            whole_axes=model.dropped_axes,
        )
    else:
        halo, window, divisor = halo_tiling
        plan = plan_blocks(
            shape,
            window,
            0.0,
            block_size,
            chunks,
            whole_axes=model.dropped_axes,
            halo=halo,
            align=divisor,
        )
    return Tiling(plan, tuple(chunks))


def memory_block_size(
    shape: Sequence[int], model: TrainedModel, chunks: Sequence[int]
) -> tuple[int, ...]:
    """The largest block whose data in flight fit ``predict.memory_gb``.

    Blocks never run a window twice (they hand their sums on), so their size trades memory
    against re-reading the input their windows share with their neighbours.
    """
    from bioim2im.prediction.blockwise.blocks import memory_block_size as fitting

    values = sum(
        head.out_channels * math.prod(head.geometry.scale[a] for a in head.geometry.kept_axes)
        for head in model.heads.values()
    )
    return fitting(
        shape,
        model.window(shape),
        int(model.preset.predict.memory_gb * 1e9),
        in_channels=model.in_channels,
        out_channels=values,
        chunk_size=chunks,
        whole_axes=model.dropped_axes,
    )


def whole_tiling(model: TrainedModel, found: InputImage) -> Tiling:
    """One block covering the whole image (for images already in memory)."""
    return _tiling(model, found, found.spatial_shape, found.spatial_shape)


def image_specs(model: TrainedModel, found: InputImage, tiling: Tiling) -> dict[str, ImageSpec]:
    """Each head's output image for ``found``: shape, axes, dtype, chunks, voxel size."""
    specs = {}
    for name, head in model.heads.items():
        geometry = head.geometry
        spatial = "".join(found.spatial[a] for a in geometry.kept_axes)
        shape = geometry.output_shape(found.spatial_shape)
        chunks = tuple(
            min(tiling.chunks[a] * geometry.scale[a], n)
            for a, n in zip(geometry.kept_axes, shape, strict=True)
        )
        size = found.voxel_size
        voxel_size = (
            None if size is None else tuple(size[a] / geometry.scale[a] for a in geometry.kept_axes)
        )
        timed = "T" in found.axes
        specs[name] = ImageSpec(
            shape=((found.time_points,) if timed else ()) + (head.channels, *shape),
            axes=("T" if timed else "") + "C" + spatial,
            dtype=head.dtype,
            chunks=((1,) if timed else ()) + (1, *chunks),
            voxel_size=voxel_size,
            is_label=head.is_label,
            blockwise_channels=head.blockwise_channels if head.neighbourhood else None,
            blockwise_dtype=head.blockwise_dtype,
            origin=output_origin(found, geometry),
        )
    return specs


def output_origin(found: InputImage, geometry: HeadGeometry) -> tuple[float, ...] | None:
    """Where a head's first output voxel centre lies (micrometers, its kept axes), from the
    input's origin: the same place, or for a head ``scale`` times finer, ``(1/scale - 1) / 2``
    input voxels from it (its first voxel's centre within the first input voxel)."""
    origin, size = found.origin, found.voxel_size
    if origin is None or size is None:
        return None
    return tuple(origin[a] + (1 / geometry.scale[a] - 1) / 2 * size[a] for a in geometry.kept_axes)


def share(plan: BlockPlan, rank: int, world: int) -> list[int]:
    """Process ``rank``'s share of the plan's blocks: a contiguous run of its sweep order, so
    that only the windows across the borders between shares run twice."""
    order = plan.sweep_order()
    return order[len(order) * rank // world : len(order) * (rank + 1) // world]


def predict_image(
    model: TrainedModel,
    found: InputImage,
    store: Store,
    tiling: Tiling,
    *,
    work: WorkDir | None = None,
    rank: int = 0,
    world: int = 1,
    name: str | None = None,
    report: Callable[[int, int], Report] | None = None,
) -> BlockCounts:
    """Predict share ``rank`` of ``world`` of ``found``'s blocks into ``store``.

    ``work`` records finished blocks (in the progress files of ``name``, default
    ``rank<rank>``) and lets a re-run skip them; ``report(blocks, voxels)`` returns the progress
    callback of one time point, given what it will predict.
    """
    from bioim2im.prediction.blockwise import BlockProgress, load_finished_blocks

    plan = tiling.plan
    counts = BlockCounts()
    for t in range(found.time_points):
        record = {**plan.fingerprint(), "time_point": t}
        finished: set[int] = set()
        if work is not None:
            for path in work.progress_files(t):
                finished |= load_finished_blocks(path, record)
        mine = set(share(plan, rank, world))
        todo = sorted(mine - finished)
        counts.total += len(mine)
        counts.resumed += len(mine & finished)
        counts.predicted += len(todo)
        if not todo:
            continue
        progress = (
            BlockProgress(work.progress_file(t, name or f"rank{rank}"), record) if work else None
        )
        _predict_blocks(
            model,
            found,
            store,
            plan,
            t,
            todo,
            progress,
            report(len(todo), _voxels(plan, todo)) if report else None,
        )
    return counts


def predict_chosen_blocks(
    model: TrainedModel,
    found: InputImage,
    store: Store,
    tiling: Tiling,
    time_point: int,
    blocks: Sequence[int],
    *,
    work: WorkDir,
    name: str,
    report: Report | None = None,
) -> tuple[int, int]:
    """Predict ``blocks`` of ``time_point`` into ``store`` with the values a single process
    predicting the whole image gives them, bit for bit (see
    :mod:`~bioim2im.prediction.blockwise.replay`); those some process recorded as finished are
    skipped, the others recorded in ``work``'s progress file ``name``. Several processes may
    predict any blocks, even the same ones, at once. Returns (blocks skipped, predicted).
    """
    from bioim2im.prediction.blockwise import BlockProgress, load_finished_blocks

    plan = tiling.plan
    record = {**plan.fingerprint(), "time_point": time_point}
    finished: set[int] = set()
    for path in work.progress_files(time_point):
        finished |= load_finished_blocks(path, record)
    todo = sorted(set(blocks) - finished)
    if todo:
        progress = BlockProgress(work.progress_file(time_point, name), record)
        _predict_blocks(model, found, store, plan, time_point, todo, progress, report, exact=True)
    return len(blocks) - len(todo), len(todo)


def _predict_blocks(
    model: TrainedModel,
    found: InputImage,
    store: Store,
    plan: BlockPlan,
    t: int,
    todo: Sequence[int],
    progress: BlockProgress | None,
    report: Report | None,
    exact: bool = False,
) -> None:
    """Predict blocks ``todo`` of time point ``t`` into ``store``; record them in ``progress``."""
    from bioim2im.prediction.blockwise import predict_blocks

    settings = model.preset.predict
    heads = model.heads
    prepare, source = normalizer(found, found.at(t), model)

    def sink(
        index: int, regions: dict[str, tuple[slice, ...]], arrays: dict[str, np.ndarray]
    ) -> None:
        for name, values in arrays.items():
            head = heads[name]
            region = regions[name][1:]
            values = head.run_pointwise(values)
            if head.neighbourhood:
                store.write_blockwise(name, t, region, values)
            else:
                store.write(name, t, region, head.to_output(values))
        if progress is not None:
            progress.mark_done(index)
        trim_heap()

    predict_blocks(
        model.network,
        source,
        plan=plan,
        out_channels={name: head.out_channels for name, head in heads.items()},
        sink=sink,
        spatial_axes=source.spatial_axes,
        blend=settings.blend,
        batch_size=settings.batch_size,
        tta=settings.tta,
        device=model.device,
        amp_dtype=model.amp_dtype,
        channels_last=settings.channels_last,
        compile=settings.compile,
        prepare=prepare,
        head_geometry={name: head.geometry for name, head in heads.items()},
        skip_blocks=set(range(len(plan))) - set(todo),
        progress=report,
        exact=exact,
    )


def _voxels(plan: BlockPlan, blocks: Sequence[int]) -> int:
    return sum(math.prod(s.stop - s.start for s in plan.core(i)) for i in blocks)


def finish_image(model: TrainedModel, found: InputImage, store: Store, tiling: Tiling) -> None:
    """Run the neighbourhood postprocessing steps over the whole image, then publish."""
    plan = tiling.plan
    for name, head in model.heads.items():
        if not head.neighbourhood:
            continue
        cores = [head.geometry.output_region(plan.core(i)) for i in range(len(plan))]
        halo = tuple(plan.roi_size[a] * head.geometry.scale[a] for a in head.geometry.kept_axes)
        for t in range(found.time_points):
            values = store.blockwise(name, t)
            if head.instance:
                _stitch_labels(name, head, store, t, values, cores, halo)
            else:
                _postprocess_with_halo(name, head, store, t, values, cores, halo)
    store.finish()


def _stitch_labels(
    name: str,
    head: HeadOutput,
    store: Store,
    t: int,
    values: Any,
    cores: Sequence[tuple[slice, ...]],
    halo: tuple[int, ...],
) -> None:
    from bioim2im.prediction.blockwise import label_blockwise

    labels = store.labels(name, t)
    for channel in range(head.channels):

        def label(block: np.ndarray, channel: int = channel) -> np.ndarray:
            return head.run_neighbourhood(block)[channel]

        count = label_blockwise(values, _Channel(labels, channel), cores, label, halo)
        if head.dtype.kind in "ui" and count > np.iinfo(head.dtype).max:
            raise UserError(
                f"head '{name}': {count} objects do not fit output_dtype {head.dtype}; "
                f'set model.heads.{name}.output_dtype = "uint32"'
            )
    for core in cores:
        store.write(name, t, core, head.to_output(np.asarray(labels[(slice(None), *core)])))


def _postprocess_with_halo(
    name: str,
    head: HeadOutput,
    store: Store,
    t: int,
    values: Any,
    cores: Sequence[tuple[slice, ...]],
    halo: tuple[int, ...],
) -> None:
    shape = values.shape[1:]
    for core in cores:
        read = tuple(
            slice(max(c.start - h, 0), min(c.stop + h, n))
            for c, h, n in zip(core, halo, shape, strict=True)
        )
        block = head.run_neighbourhood(np.asarray(values[(slice(None), *read)]))
        inner = tuple(
            slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, read, strict=True)
        )
        store.write(name, t, core, head.to_output(block[(slice(None), *inner)]))


class _Channel:
    """One channel of a (C, *spatial) array, indexed by spatial regions."""

    def __init__(self, array: Any, channel: int) -> None:
        self.array = array
        self.channel = channel
        self.shape = tuple(array.shape[1:])
        self.ndim = len(self.shape)
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[(self.channel, *region)])

    def __setitem__(self, region: tuple[slice, ...], values: np.ndarray) -> None:
        self.array[(self.channel, *region)] = values


# Blocks are large arrays that three threads allocate and free continually. By default glibc
# gives each thread its own heap and keeps what is freed there: resident memory creeps up by a
# few hundred MiB over an image. One heap for all threads and a trim after each block keep it
# near what the blocks in flight use. Nothing changes with other C libraries.
_M_ARENA_MAX = -8  # from glibc's malloc.h


def share_one_heap() -> None:
    """Have the threads created from now on allocate from one heap (glibc)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 1)


def trim_heap() -> None:
    """Give the heap's free memory back to the system (glibc)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None
