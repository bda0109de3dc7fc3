"""Instance labels computed block by block equal those of the whole image."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zarr
from skimage.measure import label

from bioim2im.prediction.blockwise.blocks import plan_blocks
from bioim2im.prediction.blockwise.stitch import label_blockwise, relabel_across_blocks


def blobs(shape: tuple[int, ...], block: int, seed: int) -> np.ndarray:
    """Probabilities of separate balls, many centred on block borders and corners."""
    rng = np.random.default_rng(seed)
    borders = [list(range(block, n, block)) for n in shape]
    centres = [np.array(c, float) for c in itertools.product(*borders)]  # block corners
    centres += [
        np.array(
            [
                rng.choice(b) if a == i else rng.uniform(0, n)
                for a, (b, n) in enumerate(zip(borders, shape, strict=True))
            ]
        )
        for i in range(len(shape))
        for _ in range(6)
    ]
    centres += [rng.uniform(0, shape) for _ in range(20)]
    grid = np.indices(shape, dtype=float)
    distance = np.full(shape, np.inf)
    placed: list[tuple[np.ndarray, float]] = []
    for centre in centres:
        radius = rng.uniform(3, 8)
        if all(np.linalg.norm(centre - c) > radius + r + 3 for c, r in placed):
            placed.append((centre, radius))
            offsets = grid - centre.reshape(-1, *([1] * len(shape)))
            distance = np.minimum(distance, np.sqrt((offsets**2).sum(0)) - radius)
    # Probability 0.5 on each ball's surface; an elongated object crosses several blocks.
    probability = 1 / (1 + np.exp(distance))
    probability[tuple(slice(4, 8) if a == 0 else slice(2, n - 2) for a, n in enumerate(shape))] = (
        0.9
    )
    return probability.astype(np.float32)


def threshold_label(probability: np.ndarray) -> np.ndarray:
    return label(probability > 0.5)


def matched_ious(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The IoU of each true object with the found object overlapping it most."""
    both = (found > 0) & (truth > 0)
    pairs, overlap = np.unique(np.stack([truth[both], found[both]]), axis=1, return_counts=True)
    sizes_true = np.bincount(truth.ravel())
    sizes_found = np.bincount(found.ravel())
    ious = np.zeros(truth.max() + 1)
    for (t, f), n in zip(pairs.T, overlap, strict=True):
        ious[t] = max(ious[t], n / (sizes_true[t] + sizes_found[f] - n))
    return ious[1:]


@pytest.mark.parametrize(("shape", "block"), [((150, 130), 40), ((48, 60, 56), 20)])
def test_block_wise_labels_match_whole_image_labels(shape: tuple[int, ...], block: int) -> None:
    probability = blobs(shape, block, seed=len(shape))
    truth = threshold_label(probability)
    plan = plan_blocks(shape, (block,) * len(shape), block_size=(block,) * len(shape))
    regions = [plan.core(i) for i in range(len(plan))]
    labels = zarr.create_array({}, shape=shape, chunks=(block,) * len(shape), dtype="uint32")
    # The probabilities carry a channel axis; the labels do not.
    n_objects = label_blockwise(
        probability[None], labels, regions, lambda p: threshold_label(p[0]), halo=12
    )
    found = labels[:]
    assert n_objects == truth.max() == found.max()
    assert len(np.unique(found)) == n_objects + 1  # ids 1..n, no gaps
    assert (matched_ious(found, truth) > 0.9).all()
    assert (matched_ious(truth, found) > 0.9).all()


def test_objects_labelled_per_block_with_unique_ids_are_merged_across_faces() -> None:
    shape, block = (150, 130), 40
    probability = blobs(shape, block, seed=7)
    truth = threshold_label(probability)
    plan = plan_blocks(shape, (block, block), block_size=(block, block))
    labels = np.zeros(shape, np.uint32)
    for index in range(len(plan)):
        core = plan.core(index)
        read = tuple(slice(max(c.start - 10, 0), c.stop + 10) for c in core)
        inner = tuple(
            slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, read, strict=True)
        )
        block_labels = threshold_label(probability[read])[inner].astype(np.uint32)
        labels[core] = np.where(block_labels > 0, block_labels + index * 2**16, 0)
    regions = [plan.core(i) for i in range(len(plan))]
    n_objects = relabel_across_blocks(labels, regions)
    assert n_objects == truth.max() == labels.max()
    assert (matched_ious(labels, truth) > 0.9).all()


def test_objects_touching_at_a_block_face_stay_apart() -> None:
    # Two boxes meet exactly at the face x = 20; a labelling that tells them apart by value
    # sees both on either side, so matching on the same voxels does not merge them.
    classes = np.zeros((30, 40), np.float32)
    classes[5:25, 10:20] = 1
    classes[5:25, 20:30] = 2
    regions = [(slice(0, 30), slice(0, 20)), (slice(0, 30), slice(20, 40))]
    labels = np.zeros(classes.shape, np.uint16)
    n_objects = label_blockwise(classes, labels, regions, lambda c: label(c.astype(int)), halo=5)
    assert n_objects == 2
    np.testing.assert_array_equal(labels, label(classes.astype(int)))


def test_images_without_objects_and_bad_pairs() -> None:
    labels = np.zeros((20, 20), np.uint32)
    regions = [(slice(0, 10), slice(0, 20)), (slice(10, 20), slice(0, 20))]
    assert label_blockwise(np.zeros((20, 20)), labels, regions, threshold_label, halo=2) == 0
    assert relabel_across_blocks(labels, regions) == 0
    labels[2:5, 2:5] = 3
    labels[12:15, 2:5] = 9
    assert relabel_across_blocks(labels.copy(), regions, pairs=[(3, 9)]) == 1
    with pytest.raises(ValueError, match="not in the labels"):
        relabel_across_blocks(labels, regions, pairs=[(3, 4)])
    with pytest.raises(ValueError, match="halo"):
        label_blockwise(np.zeros((20, 20)), labels, regions, threshold_label, halo=0)
