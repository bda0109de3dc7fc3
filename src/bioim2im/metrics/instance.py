"""Instance segmentation metrics: object matching, detection scores and Hausdorff distances.

Images are label images (2D or 3D, non-negative integers, 0 = background, one id per object).

Conventions for images without objects, so that no score divides by zero:

- no true and no predicted objects: every score is perfect (precision, recall, f1, ap and pq
  are 1.0, ``mean_matched_iou@0.50`` is 1.0 and ``hausdorff`` is 0.0);
- otherwise a ratio whose denominator is zero is 0.0 (StarDist's convention): precision with no
  predicted objects, recall with no true objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import relabel_sequential

THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""The IoU thresholds 0.50, 0.55, ..., 0.95 of ``ap@0.50:0.95``."""


@dataclass(frozen=True)
class Overlaps:
    """Every pair of a true and a predicted object that share at least one voxel.

    ``true_ids`` and ``pred_ids`` are the object ids, sorted; ``rows``, ``cols`` index them and
    ``iou`` is the intersection over union of each overlapping pair.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    iou: np.ndarray


def _sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 1..n in the order of their ids, and the ids."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"instance labels must be integers, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("instance labels must be non-negative (0 = background)")
    sequential, _, inverse = relabel_sequential(labels)
    ids = np.asarray(inverse.out_values)[np.asarray(inverse.in_values) != 0]
    return sequential.astype(np.intp, copy=False), ids


def _check_shapes(pred: np.ndarray, truth: np.ndarray) -> None:
    if np.shape(pred) != np.shape(truth):
        raise ValueError(f"prediction {np.shape(pred)} and truth {np.shape(truth)} differ in shape")


def instance_overlaps(pred: np.ndarray, truth: np.ndarray) -> Overlaps:
    """The sparse IoU matrix between true and predicted objects, from their joint histogram."""
    _check_shapes(pred, truth)
    t, true_ids = _sequential(truth)
    p, pred_ids = _sequential(pred)
    t, p = t.ravel(), p.ravel()
    true_sizes = np.bincount(t, minlength=len(true_ids) + 1)[1:]
    pred_sizes = np.bincount(p, minlength=len(pred_ids) + 1)[1:]
    both = (t > 0) & (p > 0)
    # One code per (true, pred) pair; counting codes is the joint histogram, overlaps only.
    codes = (t[both].astype(np.int64) - 1) * len(pred_ids) + (p[both].astype(np.int64) - 1)
    pairs, intersection = np.unique(codes, return_counts=True)
    rows, cols = np.divmod(pairs, max(len(pred_ids), 1))
    union = true_sizes[rows] + pred_sizes[cols] - intersection
    return Overlaps(true_ids, pred_ids, rows, cols, intersection / union)


def _assign(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Which candidate pairs form the one-to-one matching of maximal total weight.

    The candidate graph falls apart into small clusters of touching objects; solving each with
    the Hungarian algorithm keeps images with thousands of objects cheap.
    """
    if rows.size == 0:
        return np.empty(0, dtype=np.intp)
    n_rows = int(rows.max()) + 1
    graph = coo_array(
        (np.ones(rows.size), (rows, cols + n_rows)), shape=(n_rows + int(cols.max()) + 1,) * 2
    )
    _, component = connected_components(graph, directed=False)
    cluster = component[rows]
    alone = np.bincount(cluster)[cluster] == 1
    chosen = [np.flatnonzero(alone)]
    for c in np.unique(cluster[~alone]):
        candidates = np.flatnonzero(cluster == c)
        _, r = np.unique(rows[candidates], return_inverse=True)
        _, k = np.unique(cols[candidates], return_inverse=True)
        matrix = np.zeros((r.max() + 1, k.max() + 1))
        matrix[r, k] = weights[candidates]
        candidate = np.full(matrix.shape, -1)
        candidate[r, k] = candidates
        picked = candidate[linear_sum_assignment(matrix, maximize=True)]
        chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))


def match_at_threshold(overlaps: Overlaps, threshold: float) -> np.ndarray:
    """The true positives at an IoU threshold, as indices into the overlapping pairs.

    StarDist's convention: among pairs with IoU >= threshold, the one-to-one assignment with
    the most pairs, ties broken by the largest total IoU.
    """
    candidates = np.flatnonzero(overlaps.iou >= threshold)
    n = max(min(len(overlaps.true_ids), len(overlaps.pred_ids)), 1)
    # Each IoU bonus is below 1/(2n), so together they never outweigh one more match.
    weights = 1.0 + overlaps.iou[candidates] / (2 * n)
    chosen = _assign(overlaps.rows[candidates], overlaps.cols[candidates], weights)
    return candidates[chosen]


def match_overlapping(overlaps: Overlaps, weights: np.ndarray | None = None) -> np.ndarray:
    """The matching of overlapping objects with the largest total IoU, as pair indices.

    ``weights`` (one per overlapping pair, positive) replace the IoUs as what is maximised.
    """
    return _assign(overlaps.rows, overlaps.cols, overlaps.iou if weights is None else weights)


def max_distance(shape: Sequence[int], voxel_size: ArrayLike) -> float:
    """The distance cap of unmatched objects: half the smallest physical extent of the image."""
    return float(np.min(np.multiply(shape, voxel_size)) / 2)


def voxel_size_per_axis(voxel_size: ArrayLike | None, ndim: int) -> np.ndarray:
    """One positive size per axis: 1 when ``None``, a single value repeated."""
    if voxel_size is None:
        return np.ones(ndim)
    size = np.asarray(voxel_size, dtype=np.float64)
    if size.ndim == 0:
        size = np.full(ndim, size)
    if size.shape != (ndim,) or np.any(size <= 0):
        raise ValueError(f"voxel_size must hold {ndim} positive values, got {voxel_size}")
    return size


def hausdorff_distances(
    pred: np.ndarray,
    truth: np.ndarray,
    matches: tuple[np.ndarray, np.ndarray],
    *,
    voxel_size: ArrayLike | None = None,
    cap: float | None = None,
) -> np.ndarray:
    """The symmetric Hausdorff distance of each true object to its match, in physical units.

    One value per true object, in the order of its id: the largest distance from a voxel of
    either mask to the nearest voxel of the other (all voxels, not only surfaces), measured
    with Euclidean distance transforms scaled by ``voxel_size``, capped at ``cap``; an
    unmatched true object counts as ``cap``. ``matches`` index the objects as in
    :func:`instance_overlaps`. ``cap`` defaults to :func:`max_distance`.
    """
    t, true_ids = _sequential(truth)
    p, _ = _sequential(pred)
    sampling = voxel_size_per_axis(voxel_size, t.ndim)
    cap = max_distance(t.shape, sampling) if cap is None else cap
    distances = np.full(len(true_ids), cap, dtype=np.float64)
    true_boxes, pred_boxes = ndimage.find_objects(t), ndimage.find_objects(p)
    for i, j in zip(*matches, strict=True):
        # Both masks lie inside the union of their bounding boxes, so the distance transforms
        # only need that box.
        box = tuple(
            slice(min(a.start, b.start), max(a.stop, b.stop))
            for a, b in zip(true_boxes[i], pred_boxes[j], strict=True)
        )
        a, b = t[box] == i + 1, p[box] == j + 1
        to_b = ndimage.distance_transform_edt(~b, sampling=sampling)
        to_a = ndimage.distance_transform_edt(~a, sampling=sampling)
        distances[i] = min(max(to_b[a].max(), to_a[b].max()), cap)
    return distances


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def detection_scores(overlaps: Overlaps, threshold: float) -> dict[str, float]:
    """``precision@t``, ``recall@t``, ``f1@t`` and ``ap@t`` = TP / (TP + FP + FN) at one threshold."""
    n_true, n_pred = len(overlaps.true_ids), len(overlaps.pred_ids)
    t = f"{threshold:.2f}"
    if n_true == 0 and n_pred == 0:
        return {f"precision@{t}": 1.0, f"recall@{t}": 1.0, f"f1@{t}": 1.0, f"ap@{t}": 1.0}
    tp = len(match_at_threshold(overlaps, threshold))
    fp, fn = n_pred - tp, n_true - tp
    return {
        f"precision@{t}": _ratio(tp, tp + fp),
        f"recall@{t}": _ratio(tp, tp + fn),
        f"f1@{t}": _ratio(2 * tp, 2 * tp + fp + fn),
        f"ap@{t}": _ratio(tp, tp + fp + fn),
    }


def instance_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    voxel_size: ArrayLike | None = None,
    hausdorff_cap: float | None = None,
) -> dict[str, float]:
    """Detection scores at IoU thresholds 0.50..0.95, panoptic quality and Hausdorff distance.

    Keys: ``precision@t``, ``recall@t``, ``f1@t``, ``ap@t`` for each threshold in
    :data:`THRESHOLDS`; ``ap@0.50:0.95`` (their mean); ``pq@0.50`` (panoptic quality: mean IoU
    of the true positives times f1, at 0.5); ``mean_matched_iou@0.50``; and ``hausdorff``:
    the instance Hausdorff distance, the mean over true objects of
    :func:`hausdorff_distances` after matching all overlapping objects for the largest total
    IoU (:func:`match_overlapping`), in the units of ``voxel_size`` (default 1 per axis);
    unmatched true objects count as the cap (default :func:`max_distance`). With no true
    objects ``hausdorff`` is 0.0 when nothing is predicted and the cap otherwise.
    """
    overlaps = instance_overlaps(pred, truth)
    scores: dict[str, float] = {}
    for threshold in THRESHOLDS:
        scores.update(detection_scores(overlaps, threshold))
    scores["ap@0.50:0.95"] = float(np.mean([scores[f"ap@{t:.2f}"] for t in THRESHOLDS]))

    n_true, n_pred = len(overlaps.true_ids), len(overlaps.pred_ids)
    if n_true == 0 and n_pred == 0:
        scores["mean_matched_iou@0.50"] = scores["pq@0.50"] = 1.0
    else:
        matched = overlaps.iou[match_at_threshold(overlaps, 0.5)]
        scores["mean_matched_iou@0.50"] = _ratio(matched.sum(), matched.size)
        scores["pq@0.50"] = scores["mean_matched_iou@0.50"] * scores["f1@0.50"]

    sampling = voxel_size_per_axis(voxel_size, np.ndim(truth))
    cap = max_distance(np.shape(truth), sampling) if hausdorff_cap is None else hausdorff_cap
    if n_true == 0:
        scores["hausdorff"] = cap if n_pred else 0.0
    else:
        matched = match_overlapping(overlaps)
        distances = hausdorff_distances(
            pred,
            truth,
            (overlaps.rows[matched], overlaps.cols[matched]),
            voxel_size=sampling,
            cap=cap,
        )
        scores["hausdorff"] = float(distances.mean())
    return scores
