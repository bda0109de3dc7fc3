"""Instance labels of an image too large to label at once: label block by block, then stitch.

:func:`label_blockwise` labels each block on its probabilities plus a halo, so that objects near
a block border are seen whole, keeps the block's core and numbers its objects after those of the
blocks before it (ids stay unique). An object cut by a block border then carries one id per
block. Across each face between two blocks, the block labelled second also labelled the plane
just beyond its core, which is the first block's border plane: there both labellings describe the
same voxels, and labels matching with IoU > 0.5 are one object. Matching on the same voxels, not
on the two sides of the face, keeps apart distinct objects that merely touch at the face.

:func:`relabel_across_blocks` merges those pairs (connected components of the pair graph) and
rewrites the labels block by block, so memory stays bounded by a block plus one number per
object. Given only a labelled array, it finds the pairs itself by comparing the two planes on
either side of each face.

Block regions must form a grid (as :meth:`~bioim2im.prediction.blockwise.blocks.BlockPlan.core` makes);
objects are merged only across faces, not across edges or corners alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

Region = tuple[slice, ...]

MIN_MATCH_IOU = 0.5


def label_blockwise(
    probabilities: Any,
    labels: Any,
    block_regions: Sequence[Region],
    label_fn: Callable[[np.ndarray], np.ndarray],
    halo: int | Sequence[int],
) -> int:
    """Label ``probabilities`` block by block into ``labels``; returns the number of objects.

    ``labels`` is a writable array (zarr or numpy) of integers; ``probabilities`` an array with
    the same trailing axes and possibly leading ones (channels), which are passed whole.
    ``label_fn`` turns the probabilities of a block plus ``halo`` voxels per side (clipped at the
    image border) into labels of that region's shape, 0 being background. The halo should exceed
    the size of the objects near a border so both blocks see them whole; it must be at least 1.
    """
    halos = _per_axis(halo, labels.ndim)
    if min(halos) < 1:
        raise ValueError(f"halo must be at least 1 voxel, got {halo}")
    leading = (slice(None),) * (probabilities.ndim - labels.ndim)
    neighbours = _face_neighbours(block_regions)
    done: set[int] = set()
    pairs: list[tuple[int, int]] = []
    next_id = 1
    for index, core in enumerate(block_regions):
        read = tuple(
            slice(max(c.start - h, 0), min(c.stop + h, n))
            for c, h, n in zip(core, halos, labels.shape, strict=True)
        )
        region_labels = np.asarray(label_fn(np.asarray(probabilities[(*leading, *read)])))
        expected = tuple(r.stop - r.start for r in read)
        if region_labels.shape != expected:
            raise ValueError(
                f"label_fn returned shape {region_labels.shape} for a region of {expected}"
            )
        inner = tuple(
            slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, read, strict=True)
        )
        # Background first, so that position p > 0 is this block's p-th object.
        ids = np.union1d([0], region_labels[inner])
        last_id = next_id + len(ids) - 2
        if last_id > np.iinfo(labels.dtype).max:
            raise ValueError(f"{last_id} objects do not fit in the labels' dtype {labels.dtype}")

        def renumber(values: np.ndarray, ids: np.ndarray = ids, first: int = next_id) -> np.ndarray:
            # This block's objects become first, first + 1, ...; objects outside its core, 0.
            position = np.searchsorted(ids, values)
            found = np.take(ids, position, mode="clip") == values
            return np.where(found & (position > 0), position - 1 + first, 0)

        labels[core] = renumber(region_labels[inner]).astype(labels.dtype)
        for (axis, side), other in neighbours.get(index, {}).items():
            if other not in done:
                continue
            # The neighbour's border plane, which lies in this block's halo.
            plane = core[axis].start - 1 if side < 0 else core[axis].stop
            face = (*core[:axis], slice(plane, plane + 1), *core[axis + 1 :])
            in_read = tuple(
                slice(f.start - r.start, f.stop - r.start) for f, r in zip(face, read, strict=True)
            )
            mine = renumber(region_labels[in_read])
            pairs.extend(_matching_pairs(mine, np.asarray(labels[face])))
        done.add(index)
        next_id = last_id + 1
    return _merge(labels, block_regions, np.arange(1, next_id), pairs)


def relabel_across_blocks(
    labels: Any, block_regions: Sequence[Region], pairs: Sequence[tuple[int, int]] | None = None
) -> int:
    """Give each object cut by block borders one id, numbered 1..n; returns n.

    The ids of different blocks must already be distinct. ``pairs`` are ids known to be one
    object; without them, ids whose cross-sections on the two sides of a face overlap with
    IoU > 0.5 are merged, which suits blob-like objects labelled with a halo (thin oblique ones
    may not overlap from one plane to the next; use :func:`label_blockwise` for those).
    """
    found = [np.unique(np.asarray(labels[region])) for region in block_regions]
    ids = np.unique(np.concatenate(found)) if found else np.zeros(0, labels.dtype)
    ids = ids[ids != 0]
    if pairs is None:
        pairs = []
        for index, faces in _face_neighbours(block_regions).items():
            for axis, side in faces:
                if side < 0:
                    continue
                core = block_regions[index]
                last, first = core[axis].stop - 1, core[axis].stop
                before = np.asarray(
                    labels[(*core[:axis], slice(last, last + 1), *core[axis + 1 :])]
                )
                after = np.asarray(
                    labels[(*core[:axis], slice(first, first + 1), *core[axis + 1 :])]
                )
                pairs.extend(_matching_pairs(before, after))
    return _merge(labels, block_regions, ids, pairs)


def _merge(
    labels: Any, block_regions: Sequence[Region], ids: np.ndarray, pairs: Sequence[tuple[int, int]]
) -> int:
    """Rewrite ``labels`` so each connected group of ``pairs`` over ``ids`` becomes one id 1..n."""
    if len(ids) == 0:
        return 0
    edges = np.asarray(pairs, dtype=ids.dtype).reshape(-1, 2)
    nodes = np.searchsorted(ids, edges)
    if not np.array_equal(ids[np.minimum(nodes, len(ids) - 1)], edges):
        raise ValueError("pairs name ids that are not in the labels")
    graph = coo_array((np.ones(len(nodes)), (nodes[:, 0], nodes[:, 1])), shape=(len(ids), len(ids)))
    n_objects, component = connected_components(graph, directed=False)
    new_ids = np.concatenate([[0], component + 1]).astype(labels.dtype)
    for region in block_regions:
        block = np.asarray(labels[region])
        index = np.searchsorted(ids, block) + 1
        index[block == 0] = 0
        labels[region] = new_ids[index]
    return int(n_objects)


def _matching_pairs(first: np.ndarray, second: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of ids (one from each array) covering the same voxels with IoU > MIN_MATCH_IOU."""
    first, second = first.ravel(), second.ravel()
    both = (first != 0) & (second != 0)
    if not both.any():
        return []
    pair_ids, overlap = np.unique(np.stack([first[both], second[both]]), axis=1, return_counts=True)
    sizes_first = dict(zip(*np.unique(first[first != 0], return_counts=True), strict=True))
    sizes_second = dict(zip(*np.unique(second[second != 0], return_counts=True), strict=True))
    pairs = []
    for (a, b), n in zip(pair_ids.T.tolist(), overlap.tolist(), strict=True):
        if n / (sizes_first[a] + sizes_second[b] - n) > MIN_MATCH_IOU:
            pairs.append((a, b))
    return pairs


def _face_neighbours(block_regions: Sequence[Region]) -> dict[int, dict[tuple[int, int], int]]:
    """For each block, its neighbour across each face: ``{(axis, -1 or +1): index}``."""

    def key(region: Region, axis: int, position: int) -> tuple[Any, ...]:
        # A grid neighbour shares the face position and the extent on every other axis.
        others = tuple((s.start, s.stop) for a, s in enumerate(region) if a != axis)
        return axis, position, others

    starting = {key(r, a, s.start): i for i, r in enumerate(block_regions) for a, s in enumerate(r)}
    neighbours: dict[int, dict[tuple[int, int], int]] = {}
    for index, region in enumerate(block_regions):
        for axis, extent in enumerate(region):
            after = starting.get(key(region, axis, extent.stop))
            if after is not None:
                neighbours.setdefault(index, {})[(axis, 1)] = after
                neighbours.setdefault(after, {})[(axis, -1)] = index
    return neighbours


def _per_axis(value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    values = (
        (int(value),) * ndim
        if isinstance(value, (int, np.integer))
        else tuple(int(v) for v in value)
    )
    if len(values) != ndim:
        raise ValueError(f"expected 1 or {ndim} values, got {len(values)}")
    return values
