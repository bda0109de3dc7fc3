"""The CellMap segmentation challenge's score of one volume.

Follows the public evaluation code of janelia-cellmap/cellmap-segmentation-challenge as read
in 2026: ``src/cellmap_segmentation_challenge/utils/eval_utils/`` (``scoring.py``,
``instance_matching.py``, ``distance.py``, and ``combine_scores`` in ``aggregation.py`` in the
version that pools TP/FP/FN per class and averages classes plainly). These rules score
instance classes by F1; earlier rules (``utils/evaluate.py``, 2024-2025) used a voxel-wise
"accuracy" of the matched labels instead and weighted instance scores by voxel counts.

Instance classes:

1. the prediction is relabelled by connected components (full connectivity, each label value
   on its own); the truth's instance ids are used as they are;
2. true and predicted objects that overlap are matched one-to-one for the largest total IoU
   (no IoU threshold; the challenge solves it as a min-cost flow, which also breaks exact ties
   toward more matches, here with the Hungarian algorithm): TP = matched pairs, FP = unmatched predictions, FN = unmatched true objects;
   ``f1`` = 2 TP / (2 TP + FP + FN);
3. one Hausdorff distance per true object (symmetric, over all voxels, in the units of
   ``voxel_size``, capped at ``hausdorff_distance_max``, which defaults to half the smallest
   physical extent of the volume; an unmatched true object counts as the cap) plus the cap once
   per unmatched prediction; each is normalised as ``1.01 ** (-d / |voxel_size|)``, with
   ``|voxel_size|`` the Euclidean norm of the voxel size vector, and
   ``normalized_hausdorff_distance`` is their mean;
4. ``combined_score`` = sqrt(f1 * normalized_hausdorff_distance); a class with neither true
   nor predicted objects scores 1.0 throughout.

Semantic classes: voxels > 0 are foreground; ``iou`` = TP / (TP + FP + FN), 1.0 when both are
empty.

``overall_instance_score`` and ``overall_semantic_score`` are plain means over the classes of
each kind (0 when a kind has no class, as in the challenge, which then makes the overall score
0), and ``overall_score`` is their geometric mean. A class of the truth missing from the
prediction scores 0, as an unsubmitted label does; predicted classes absent from the truth are
not scored.

Not reproduced: the challenge's pooling of counts over many crops (averaging per-volume scores
differs from it), its resampling of submissions to the truth's grid, its masks of uncertain
regions, and its refusal to match when there are far more predicted than true objects.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

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


def normalize_distance(distance: np.ndarray, voxel_size: ArrayLike) -> np.ndarray:
    """CellMap's distance score in (0, 1]: ``1.01 ** (-distance / |voxel_size|)``."""
    return 1.01 ** (-np.asarray(distance) / np.linalg.norm(voxel_size))


def score_instance_class(
    pred: np.ndarray, truth: np.ndarray, voxel_size: ArrayLike, cap: float | None = None
) -> dict[str, float]:
    """``f1``, ``normalized_hausdorff_distance`` and ``combined_score`` of one instance class.

    ``cap`` bounds the Hausdorff distances; it defaults to half the smallest physical extent.
    """
    voxel_size = voxel_size_per_axis(voxel_size, np.ndim(truth))
    cap = max_distance(np.shape(truth), voxel_size) if cap is None else cap
    pred = label(np.asarray(pred), connectivity=np.ndim(pred))
    overlaps = instance_overlaps(pred, truth)
    matched = match_overlapping(overlaps)
    tp = len(matched)
    fp, fn = len(overlaps.pred_ids) - tp, len(overlaps.true_ids) - tp
    if tp + fp + fn == 0:
        return {"f1": 1.0, "normalized_hausdorff_distance": 1.0, "combined_score": 1.0}
    per_truth = hausdorff_distances(
        pred,
        truth,
        (overlaps.rows[matched], overlaps.cols[matched]),
        voxel_size=voxel_size,
        cap=cap,
    )
    distances = np.concatenate([per_truth, np.full(fp, cap)])
    f1 = 2 * tp / (2 * tp + fp + fn)
    hausdorff = float(normalize_distance(distances, voxel_size).mean())
    return {
        "f1": f1,
        "normalized_hausdorff_distance": hausdorff,
        "combined_score": float(np.sqrt(f1 * hausdorff)),
    }


def score_semantic_class(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``iou`` of one semantic class, voxels > 0 being foreground."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    tp = np.count_nonzero(p & t)
    union = np.count_nonzero(p | t)
    return {"iou": float(tp / union) if union else 1.0}


def cellmap_score(
    pred: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    *,
    instance_classes: Collection[str],
    voxel_size: ArrayLike,
    hausdorff_distance_max: float | None = None,
) -> dict[str, float]:
    """The CellMap challenge's scores of one volume, class by class and overall.

    ``pred`` and ``truth`` map class names to arrays of one shape (instance labels for the
    ``instance_classes``, masks for the others); ``voxel_size`` is one value per axis, or one
    for all. Keys: ``<class>/f1``, ``<class>/normalized_hausdorff_distance`` and
    ``<class>/combined_score`` for instance classes, ``<class>/iou`` for semantic ones, then
    ``overall_instance_score``, ``overall_semantic_score`` and ``overall_score``.
    """
    scores: dict[str, float] = {}
    instance_scores, semantic_scores = [], []
    for name, target in truth.items():
        predicted = pred.get(name)
        if name in instance_classes:
            if predicted is None:
                result = {"f1": 0.0, "normalized_hausdorff_distance": 0.0, "combined_score": 0.0}
            else:
                result = score_instance_class(predicted, target, voxel_size, hausdorff_distance_max)
            instance_scores.append(result["combined_score"])
        else:
            result = {"iou": 0.0} if predicted is None else score_semantic_class(predicted, target)
            semantic_scores.append(result["iou"])
        scores.update({f"{name}/{key}": value for key, value in result.items()})
    instance = float(np.mean(instance_scores)) if instance_scores else 0.0
    semantic = float(np.mean(semantic_scores)) if semantic_scores else 0.0
    scores["overall_instance_score"] = instance
    scores["overall_semantic_score"] = semantic
    scores["overall_score"] = float(np.sqrt(instance * semantic))
    return scores
