"""The CellMap segmentation challenge's scores: counts per crop and class, pooled per class.

Follows the challenge's evaluation code as it stands after its PR #211 (merged 2026-06-29; read
at janelia-cellmap/cellmap-segmentation-challenge, commit 6b9ad68 of 2026-06-30):
``utils/eval_utils/scoring.py`` (``score_instance``, ``score_semantic``, ``empty_label_score``),
``instance_matching.py``, ``distance.py`` and ``aggregation.py`` (``combine_scores``). Its
``EVALUATION.md`` of the same date still describes the earlier voxel-weighted scheme; PR #213
(merged later, not followed here) turns unmatched instances' distances into infinity (score 0)
and rescales the normalisation.

Per crop and instance class (:func:`instance_counts`):

1. the prediction is relabelled by connected components (full connectivity, each label value
   on its own: touching objects with the same id merge); the truth's ids are used as they are;
2. when there are more than ``10 + 50 * exp(-n_truth / 5)`` predicted objects per true one, or
   more than 5,000,000 overlapping pairs, the crop is not matched and counts nothing
   (``status`` says why): the challenge's guard against pathological submissions;
3. true and predicted objects that overlap are matched one to one by the challenge's min-cost
   flow, whose costs ``int((1 - IoU) * 1e6)`` against ``1e6 + 1`` for leaving a true object
   unmatched make it maximise the total IoU (ties toward more matches); solved here with the
   Hungarian algorithm on the same integer costs. Every matched pair is a TP (no IoU
   threshold); FP = unmatched predictions, FN = unmatched true objects;
4. one Hausdorff distance per true object (symmetric, over all voxels, in the units of
   ``voxel_size``, capped at half the smallest physical extent of the crop; an unmatched true
   object counts as the cap) plus the cap once per unmatched prediction; each normalised as
   ``1.01 ** (-d / |voxel_size|)`` (``|voxel_size|``: the Euclidean norm), summed
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

One deviation: the challenge renames each matched prediction to its true object's id and keeps
the other predictions' component numbers, so an unmatched prediction whose number happens to
equal a true id is measured against that true object (and a matched one may merge with it).
Here distances are measured between matched pairs only, as its documentation describes.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from skimage.measure import label

from bioim2im.metrics.instance import (
    hausdorff_distances,
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


def instance_counts(
    pred: np.ndarray, truth: np.ndarray, voxel_size: ArrayLike, cap: float | None = None
) -> dict[str, Any]:
    """TP, FP, FN and the normalised Hausdorff sum and count of one instance class in one crop.

    ``voxel_size``: one value per axis, or one for all; ``cap`` defaults to half the smallest
    physical extent of the crop.
    """
    truth = np.asarray(truth)
    sizes = voxel_size_per_axis(voxel_size, truth.ndim)
    cap = max_distance(truth.shape, sizes) if cap is None else cap
    pred = np.asarray(pred)
    if pred.dtype.kind == "f":
        pred = np.rint(np.nan_to_num(pred)).astype(np.int64)
    pred = label(pred, connectivity=truth.ndim)
    true_ids = np.unique(truth)
    n_truth = int(np.count_nonzero(true_ids))
    n_pred = int(pred.max()) if pred.size else 0
    if n_truth and n_pred / n_truth > ratio_cutoff(n_truth):
        return _pathological("skipped_too_many_instances")
    overlaps = instance_overlaps(pred, truth)
    if overlaps.iou.size > MAX_OVERLAP_EDGES:
        return _pathological("skipped_too_many_instances")
    matched = match_overlapping(overlaps, matching_weights(overlaps.iou))
    tp = int(matched.size)
    fp, fn = n_pred - tp, n_truth - tp
    distances = np.full(fp, cap, dtype=np.float64)
    if n_truth:
        per_truth = hausdorff_distances(
            pred,
            truth,
            (overlaps.rows[matched], overlaps.cols[matched]),
            voxel_size=sizes,
            cap=cap,
        )
        distances = np.concatenate([per_truth, distances])
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "hausdorff_norm_sum": float(normalize_distance(distances, sizes).sum()),
        "n_hausdorff": int(distances.size),
        "status": "scored",
    }


def matching_weights(iou: np.ndarray) -> np.ndarray:
    """What the matching maximises per overlapping pair: the cost of leaving a true object
    unmatched minus the challenge's integer cost of the pair (so ties go to more matches)."""
    cost = np.floor((1.0 - iou.astype(np.float64)) * COST_SCALE)
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
