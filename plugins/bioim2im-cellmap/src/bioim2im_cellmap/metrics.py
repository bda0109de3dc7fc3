"""The CellMap segmentation challenge's scores: counts per crop and class, pooled per class.

Follows the challenge's evaluation code as it stands after its PR #211 (merged 2026-06-29; read
at janelia-cellmap/cellmap-segmentation-challenge, commit 6b9ad68 of 2026-06-30):
``utils/eval_utils/scoring.py`` (``score_instance``, ``score_semantic``, ``empty_label_score``),
``instance_matching.py``, ``distance.py`` and ``aggregation.py`` (``combine_scores``). Its
``EVALUATION.md`` of the same date still describes the earlier voxel-weighted scheme; PR #213
(merged later, not followed here) turns unmatched instances' distances into infinity (score 0)
and rescales the normalisation.

Per crop and instance class (:func:`instance_counts`), as ``score_instance`` does:

1. the prediction is relabelled by connected components as the challenge's ``cc3d`` call does
   (:func:`components`: full connectivity, voxels connected only when their values are exactly
   equal, so touching objects with different ids stay apart and any non-zero value, a float
   such as 0.3 or a NaN, is foreground; each NaN voxel is an object of its own; components
   numbered 1..n in the order of their first voxel in a C-order scan); the truth's ids are used
   as they are;
2. when the prediction has more than ``10 + 50 * exp(-n / 5)`` objects per true one, ``n``
   being the largest true id (not the number of true objects), or more than 5,000,000
   overlapping pairs, the crop is not matched and counts nothing (``status`` says why): the
   challenge's guard against pathological submissions;
3. true and predicted objects that overlap are matched one to one by the challenge's min-cost
   flow, whose costs ``int((1 - IoU) * 1e6)`` (IoU in float32) against ``1e6 + 1`` for leaving
   a true object unmatched make it maximise the total of ``1e6 + 1 - cost``; solved here with
   the Hungarian algorithm on the same integer costs (equal optima; on exact ties the pair
   chosen may differ). Every matched pair is a TP (no IoU threshold); FP = unmatched
   predictions, FN = unmatched true objects;
4. each matched prediction takes its true object's id and every other keeps its component
   number (the challenge's ``remap(..., preserve_missing_labels=True)``); then one Hausdorff
   distance per true id ``k`` between ``truth == k`` and ``prediction == k`` (symmetric, over
   all voxels, in the units of ``voxel_size``, capped at half the smallest physical extent of
   the crop; the cap when one side is empty), so an unmatched component whose number equals a
   true id is measured against that true object, as in the challenge; plus the cap once per
   unmatched prediction. Distances are kept in float32, as the challenge keeps them; each is
   normalised as ``1.01 ** (-d / |voxel_size|)`` (``|voxel_size|``: the Euclidean norm), summed
   (``hausdorff_norm_sum``) and counted (``n_hausdorff``).

Per crop and semantic class (:func:`semantic_counts`): voxels > 0 are foreground; TP, FP, FN
voxels. A class of the truth that the submission lacks (:func:`missing_counts`) counts every
true object as FN at normalised distance 0 (instance), or every voxel of the crop as FN
(semantic), as the challenge's ``empty_label_score`` does.

Pooled per class over crops (:func:`combine`): instance ``f1 = 2 ΣTP / (2 ΣTP + ΣFP + ΣFN)``,
``normalized_hausdorff_distance = Σ hausdorff_norm_sum / Σ n_hausdorff`` and
``combined_score = sqrt(f1 * normalized_hausdorff_distance)``, all 1.0 when the class has
nothing anywhere; semantic ``iou = ΣTP / (ΣTP + ΣFP + ΣFN)``, 1.0 when nothing anywhere.
``overall_instance_score`` and ``overall_semantic_score`` are plain means over the classes of
each kind (0 without any), ``overall_score`` their geometric mean.

The challenge's later PR #214 (after 6b9ad68, not followed here) sets unmatched predictions to
background before the distances, which removes the id collisions of step 4.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from skimage.measure import label

from bioim2im.metrics.instance import (
    instance_overlaps,
    match_overlapping,
    max_distance,
    voxel_size_per_axis,
)

COST_SCALE = 1_000_000
"""The challenge's integer scale of matching costs."""
MAX_OVERLAP_EDGES = 5_000_000
RATIO_BASE, RATIO_EXTRA, RATIO_DECAY = 10.0, 50.0, 5.0
"""Predicted objects per true object allowed: ``RATIO_BASE + RATIO_EXTRA * exp(-n / RATIO_DECAY)``."""


def normalize_distance(distance: ArrayLike, voxel_size: ArrayLike) -> np.ndarray:
    """CellMap's distance score in [0, 1]: ``1.01 ** (-distance / |voxel_size|)``, infinity 0."""
    d = np.asarray(distance, dtype=np.float64)
    with np.errstate(over="ignore"):
        score = 1.01 ** (-d / np.linalg.norm(voxel_size))
    return np.where(np.isinf(d), 0.0, score)


def ratio_cutoff(n_truth: int) -> float:
    """Most predicted objects per true object before a crop is deemed pathological."""
    return RATIO_BASE + RATIO_EXTRA * math.exp(-n_truth / RATIO_DECAY)


def _pathological(status: str) -> dict[str, Any]:
    return {
        "tp": 0,
        "fp": 0,
        "fn": 0,
        "hausdorff_norm_sum": 0.0,
        "n_hausdorff": 0,
        "status": status,
    }


def components(pred: ArrayLike) -> tuple[np.ndarray, int]:
    """The connected components of ``pred`` as the challenge's ``cc3d.connected_components``
    numbers them, and their count.

    Voxels are connected when they touch (full connectivity: 26 in 3D, 8 in 2D) and hold exactly
    the same value; every non-zero value is foreground (negative ids, fractions, NaN); each NaN
    voxel is a component of its own (NaN equals nothing). Components are numbered 1..n in the
    order of their first voxel in a C-order scan.
    """
    values = np.asarray(pred)
    if values.dtype == bool:
        codes: np.ndarray = values
    elif values.dtype.kind in "iu" and values.dtype.itemsize <= 4:
        codes = values
    else:
        codes = _value_codes(values)
    if codes.size == 0:
        return np.zeros(values.shape, dtype=np.int64), 0
    labelled = label(codes, background=0, connectivity=max(codes.ndim, 1))
    n = int(labelled.max())
    return _raster_order(labelled, n), n


def _value_codes(values: np.ndarray) -> np.ndarray:
    """One integer per distinct value (0 for zero), one per NaN voxel."""
    nan = np.isnan(values) if values.dtype.kind in "fc" else np.zeros(values.shape, dtype=bool)
    finite = np.where(nan, 0, values)
    distinct, inverse = np.unique(finite, return_inverse=True)
    codes = inverse.reshape(values.shape).astype(np.int64) + 1
    codes[finite == 0] = 0
    n_nan = int(np.count_nonzero(nan))
    if n_nan:
        codes[nan] = distinct.size + 1 + np.arange(n_nan)
    return codes


def _raster_order(labelled: np.ndarray, n: int) -> np.ndarray:
    """``labelled`` renumbered by the C-order position of each component's first voxel."""
    if n <= 1:
        return labelled
    flat = labelled.ravel()
    first = np.full(n + 1, flat.size, dtype=np.int64)
    np.minimum.at(first, flat, np.arange(flat.size, dtype=np.int64))
    order = np.argsort(first[1:], kind="stable")
    if np.array_equal(order, np.arange(n)):
        return labelled
    lut = np.zeros(n + 1, dtype=labelled.dtype)
    lut[order + 1] = np.arange(1, n + 1, dtype=labelled.dtype)
    return lut[labelled]


def match_instances(truth: np.ndarray, pred: np.ndarray, n_pred: int) -> dict[int, int] | str:
    """The challenge's ``match_instances``: predicted component -> true id, or the status of a
    crop that is not matched."""
    n_truth = int(truth.max()) if truth.size else 0
    if n_truth <= 0 or n_pred == 0:
        return {}
    if n_pred / n_truth > ratio_cutoff(n_truth):
        return "skipped_too_many_instances"
    overlaps = instance_overlaps(pred, np.where(truth > 0, truth, 0))
    if overlaps.iou.size > MAX_OVERLAP_EDGES:
        return "skipped_too_many_instances"
    if overlaps.iou.size == 0:
        return {}
    matched = match_overlapping(overlaps, matching_weights(overlaps.iou))
    true_ids = overlaps.true_ids[overlaps.rows[matched]]
    pred_ids = overlaps.pred_ids[overlaps.cols[matched]]
    return {int(p): int(t) for p, t in zip(pred_ids, true_ids, strict=True)}


def instance_counts(
    pred: np.ndarray, truth: np.ndarray, voxel_size: ArrayLike, cap: float | None = None
) -> dict[str, Any]:
    """TP, FP, FN and the normalised Hausdorff sum and count of one instance class in one crop.

    ``voxel_size``: one value per axis, or one for all; ``cap`` defaults to half the smallest
    physical extent of the crop.
    """
    truth = np.asarray(truth)
    if truth.dtype == bool:
        truth = truth.astype(np.uint8)
    sizes = voxel_size_per_axis(voxel_size, truth.ndim)
    cap = max_distance(truth.shape, sizes) if cap is None else cap
    if np.shape(pred) != truth.shape:
        raise ValueError(f"prediction {np.shape(pred)} and truth {truth.shape} differ in shape")
    labelled, n_pred = components(pred)
    mapping = match_instances(truth, labelled, n_pred)
    if isinstance(mapping, str):
        return _pathological(mapping)
    true_ids = np.unique(truth)
    true_ids = true_ids[true_ids != 0]
    distances = np.concatenate(
        [
            _distances_by_id(truth, labelled, n_pred, mapping, true_ids, sizes, cap),
            np.full(n_pred - len(mapping), cap, dtype=np.float32),
        ]
    )
    tp = len(set(mapping.values()))
    return {
        "tp": tp,
        "fp": n_pred - len(mapping),
        "fn": int(true_ids.size) - tp,
        "hausdorff_norm_sum": float(np.sum(normalize_distance(distances, sizes))),
        "n_hausdorff": int(distances.size),
        "status": "scored",
    }


def _distances_by_id(
    truth: np.ndarray,
    labelled: np.ndarray,
    n_pred: int,
    mapping: Mapping[int, int],
    true_ids: np.ndarray,
    sizes: np.ndarray,
    cap: float,
) -> np.ndarray:
    """Per true id ``k`` (in ``true_ids``' order), the capped Hausdorff distance (float32)
    between ``truth == k`` and the components that bear ``k`` once matched ones take their
    true id: the cap when none does."""
    from scipy import ndimage

    distances = np.empty(true_ids.size, dtype=np.float32)
    if not true_ids.size:
        return distances
    # The id each component bears after the challenge's remap.
    bears = np.arange(n_pred + 1, dtype=np.int64)
    for p, t in mapping.items():
        bears[p] = t
    wanted = {int(k): i for i, k in enumerate(true_ids.tolist())}
    bearers: dict[int, list[int]] = {}
    for component in range(1, n_pred + 1):
        value = int(bears[component])
        if value in wanted:
            bearers.setdefault(value, []).append(component)
    # Each true object's box, from the truth renumbered 1..n in the order of true_ids.
    order = np.searchsorted(true_ids, truth)
    present = (order < true_ids.size) & (truth != 0)
    sequential = np.where(present, order + 1, 0)
    true_boxes = ndimage.find_objects(sequential)
    pred_boxes = ndimage.find_objects(labelled) if n_pred else []
    for k, i in wanted.items():
        components_k = bearers.get(k)
        if not components_k:
            distances[i] = cap
            continue
        boxes = [true_boxes[i], *(pred_boxes[c - 1] for c in components_k)]
        # Both masks lie in the union of their boxes, so the distance transforms need only it.
        box = tuple(
            slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes))
            for d in range(truth.ndim)
        )
        a = truth[box] == k
        b = np.isin(labelled[box], components_k)
        to_b = ndimage.distance_transform_edt(~b, sampling=sizes)
        to_a = ndimage.distance_transform_edt(~a, sampling=sizes)
        distances[i] = min(max(float(to_b[a].max()), float(to_a[b].max())), cap)
    return distances


def matching_weights(iou: np.ndarray) -> np.ndarray:
    """What the matching maximises per overlapping pair: the cost of leaving a true object
    unmatched minus the challenge's integer cost of the pair (the IoU rounded to float32 first,
    as the challenge stores it; so ties go to more matches)."""
    cost = np.floor((1.0 - iou.astype(np.float32).astype(np.float64)) * COST_SCALE)
    return (COST_SCALE + 1) - cost


def semantic_counts(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """TP, FP and FN voxels of one semantic class in one crop (voxels > 0 are foreground)."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    tp = int(np.count_nonzero(p & t))
    return {
        "tp": tp,
        "fp": int(np.count_nonzero(p)) - tp,
        "fn": int(np.count_nonzero(t)) - tp,
        "status": "scored",
    }


def missing_counts(truth: np.ndarray, instance: bool) -> dict[str, Any]:
    """The counts of a class the submission lacks: every true object (instance) or every voxel
    of the crop (semantic) a false negative, at the worst distance score."""
    truth = np.asarray(truth)
    if instance:
        n = int(np.count_nonzero(np.unique(truth)))
        return {
            "tp": 0,
            "fp": 0,
            "fn": n,
            "hausdorff_norm_sum": 0.0,
            "n_hausdorff": n,
            "status": "missing",
        }
    return {"tp": 0, "fp": 0, "fn": int(truth.size), "status": "missing"}


def class_scores(counts: Iterable[Mapping[str, Any]], instance: bool) -> dict[str, float]:
    """One class's scores from its counts pooled over crops."""
    pooled = {"tp": 0, "fp": 0, "fn": 0, "hausdorff_norm_sum": 0.0, "n_hausdorff": 0}
    for crop in counts:
        for key in pooled:
            pooled[key] += crop.get(key, 0)
    tp, fp, fn = pooled["tp"], pooled["fp"], pooled["fn"]
    totals = {"tp": int(tp), "fp": int(fp), "fn": int(fn)}
    if instance:
        denominator, n = 2 * tp + fp + fn, pooled["n_hausdorff"]
        if denominator == 0 and n == 0:
            return {
                "f1": 1.0,
                "normalized_hausdorff_distance": 1.0,
                "combined_score": 1.0,
                **totals,
            }
        f1 = 2 * tp / denominator if denominator else 0.0
        hausdorff = pooled["hausdorff_norm_sum"] / n if n else 0.0
        return {
            "f1": float(f1),
            "normalized_hausdorff_distance": float(hausdorff),
            "combined_score": float(math.sqrt(f1 * hausdorff)),
            **totals,
        }
    denominator = tp + fp + fn
    return {"iou": float(tp / denominator) if denominator else 1.0, **totals}


def combine(
    counts: Mapping[str, Iterable[Mapping[str, Any]]], instance_classes: Collection[str]
) -> dict[str, Any]:
    """``label_scores`` per class (pooled over its crops) and the overall scores.

    ``counts`` maps each class to its per-crop counts.
    """
    label_scores = {
        name: class_scores(crops, name in instance_classes) for name, crops in counts.items()
    }
    instance = [s["combined_score"] for n, s in label_scores.items() if n in instance_classes]
    semantic = [s["iou"] for n, s in label_scores.items() if n not in instance_classes]
    overall_instance = float(np.mean(instance)) if instance else 0.0
    overall_semantic = float(np.mean(semantic)) if semantic else 0.0
    return {
        "label_scores": label_scores,
        "overall_instance_score": overall_instance,
        "overall_semantic_score": overall_semantic,
        "overall_score": float(math.sqrt(overall_instance * overall_semantic)),
    }


def cellmap_score(
    pred: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    *,
    instance_classes: Collection[str],
    voxel_size: ArrayLike,
    hausdorff_distance_max: float | None = None,
) -> dict[str, float]:
    """The CellMap challenge's scores of one volume (one crop), class by class and overall.

    ``pred`` and ``truth`` map class names to arrays of one shape (instance labels for the
    ``instance_classes``, masks for the others); ``voxel_size`` is one value per axis, or one
    for all. Keys: ``<class>/f1``, ``<class>/normalized_hausdorff_distance`` and
    ``<class>/combined_score`` for instance classes, ``<class>/iou`` for semantic ones, then
    ``overall_instance_score``, ``overall_semantic_score`` and ``overall_score``. Classes of the
    prediction absent from the truth are not scored.
    """
    counts: dict[str, list[dict[str, Any]]] = {}
    for name, target in truth.items():
        instance = name in instance_classes
        predicted = pred.get(name)
        if predicted is None:
            counts[name] = [missing_counts(target, instance)]
        elif instance:
            counts[name] = [instance_counts(predicted, target, voxel_size, hausdorff_distance_max)]
        else:
            counts[name] = [semantic_counts(predicted, target)]
    combined = combine(counts, instance_classes)
    scores: dict[str, float] = {}
    for name, values in combined["label_scores"].items():
        scores.update({f"{name}/{k}": v for k, v in values.items() if k not in ("tp", "fp", "fn")})
    for key in ("overall_instance_score", "overall_semantic_score", "overall_score"):
        scores[key] = combined[key]
    return scores
