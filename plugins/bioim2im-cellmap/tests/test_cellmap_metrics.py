import math

import numpy as np
import pytest

from bioim2im_cellmap.metrics import cellmap_score, normalize_distance


def split_object() -> tuple[np.ndarray, np.ndarray]:
    """Truth: object 1 (6x6) and 7 (8x8); prediction: 1 shifted a column, 7 split in two."""
    truth = np.zeros((20, 20), dtype=np.uint16)
    truth[2:8, 2:8] = 1
    truth[10:18, 10:18] = 7
    pred = np.zeros_like(truth)
    pred[2:8, 3:9] = 3
    pred[10:18, 10:14] = 5
    pred[10:18, 14:18] = 6
    return pred, truth


def test_normalized_distance_formula():
    assert normalize_distance(np.array([0.0, 10.0, np.inf]), (3.0, 4.0)) == pytest.approx(
        [1.0, 1.01**-2, 0.0]
    )


def test_hand_computed_instance_and_semantic_scores():
    pred, truth = split_object()
    scores = cellmap_score(
        {"mito": pred, "er": pred > 0},
        {"mito": truth, "er": truth > 0},
        instance_classes={"mito"},
        voxel_size=(4.0, 4.0),
    )
    # TP 2 (object 1, one half of 7), FP 1 (the other half), FN 0.
    f1 = 4 / 5
    # Distances: one column (4), four columns (16), and the cap for the unmatched half:
    # half the smallest extent, 20 * 4 / 2 = 40.
    hausdorff = np.mean([1.01 ** (-d / math.hypot(4, 4)) for d in (4.0, 16.0, 40.0)])
    # Semantic: 36 + 64 true voxels, 36 + 64 predicted, 30 + 64 shared.
    iou = 94 / 106
    assert scores == pytest.approx(
        {
            "mito/f1": f1,
            "mito/normalized_hausdorff_distance": hausdorff,
            "mito/combined_score": math.sqrt(f1 * hausdorff),
            "er/iou": iou,
            "overall_instance_score": math.sqrt(f1 * hausdorff),
            "overall_semantic_score": iou,
            "overall_score": math.sqrt(math.sqrt(f1 * hausdorff) * iou),
        }
    )


def test_prediction_is_relabelled_by_connected_components_but_truth_is_not():
    truth = np.zeros((12, 12), dtype=np.uint8)
    truth[1:4, 1:4] = 1
    truth[7:10, 7:10] = 2
    one_label = (truth > 0).astype(np.uint8)
    scores = cellmap_score({"c": one_label}, {"c": truth}, instance_classes={"c"}, voxel_size=1)
    assert scores["c/f1"] == 1.0
    assert scores["c/combined_score"] == 1.0
    # One true id on two blobs stays one object; the prediction splits into two: TP 1, FP 1.
    scores = cellmap_score({"c": truth}, {"c": one_label}, instance_classes={"c"}, voxel_size=1)
    assert scores["c/f1"] == pytest.approx(2 / 3)


def test_empty_and_missing_classes():
    empty = np.zeros((8, 8), dtype=np.uint8)
    present = empty.copy()
    present[2:5, 2:5] = 1
    scores = cellmap_score(
        {"nuc": empty, "cyto": empty},
        {"nuc": empty, "cyto": empty, "ves": present, "mem": present},
        instance_classes={"nuc", "ves"},
        voxel_size=(1.0, 1.0),
    )
    assert scores["nuc/f1"] == scores["nuc/combined_score"] == 1.0
    assert scores["cyto/iou"] == 1.0
    assert scores["ves/f1"] == scores["ves/combined_score"] == 0.0
    assert scores["mem/iou"] == 0.0
    assert scores["overall_instance_score"] == 0.5
    assert scores["overall_semantic_score"] == 0.5


def test_unmatched_predictions_cost_the_cap():
    truth = np.zeros((10, 10), dtype=np.uint8)
    pred = truth.copy()
    pred[2:4, 2:4] = 1
    scores = cellmap_score({"c": pred}, {"c": truth}, instance_classes={"c"}, voxel_size=2.0)
    assert scores["c/f1"] == 0.0
    assert scores["c/normalized_hausdorff_distance"] == pytest.approx(
        1.01 ** (-10 / math.hypot(2, 2))
    )
    assert scores["c/combined_score"] == 0.0
    capped = cellmap_score(
        {"c": pred}, {"c": truth}, instance_classes={"c"}, voxel_size=2.0, hausdorff_distance_max=5
    )
    assert capped["c/normalized_hausdorff_distance"] == pytest.approx(
        1.01 ** (-5 / math.hypot(2, 2))
    )


def test_overall_score_is_zero_without_semantic_classes():
    _, truth = split_object()
    scores = cellmap_score({"c": truth}, {"c": truth}, instance_classes={"c"}, voxel_size=1)
    assert scores["overall_instance_score"] == 1.0
    assert scores["overall_semantic_score"] == 0.0
    assert scores["overall_score"] == 0.0


def test_semantic_prediction_is_foreground_above_zero():
    truth = np.zeros((6, 6), dtype=np.uint8)
    truth[:3] = 1
    pred = np.where(truth > 0, 0.7, 0.0)
    pred[3, 0] = 0.2
    scores = cellmap_score({"s": pred}, {"s": truth}, instance_classes=set(), voxel_size=1)
    assert scores["s/iou"] == pytest.approx(18 / 19)


def test_3d_anisotropic_voxels():
    truth = np.zeros((8, 12, 12), dtype=np.uint32)
    truth[1:5, 2:8, 2:8] = 11
    pred = np.roll(truth, 1, axis=0)
    voxel_size = (8.0, 2.0, 2.0)
    scores = cellmap_score({"c": pred}, {"c": truth}, instance_classes={"c"}, voxel_size=voxel_size)
    hausdorff = 1.01 ** (-8.0 / np.linalg.norm(voxel_size))
    assert scores["c/f1"] == 1.0
    assert scores["c/normalized_hausdorff_distance"] == pytest.approx(hausdorff)
    assert scores["c/combined_score"] == pytest.approx(math.sqrt(hausdorff))


def test_invariant_to_label_permutation():
    pred, truth = split_object()
    permute_pred = np.zeros(7, dtype=np.int64)
    permute_pred[[3, 5, 6]] = [60, 2, 31]
    permute_truth = np.zeros(8, dtype=np.int64)
    permute_truth[[1, 7]] = [9, 4]
    kwargs = {"instance_classes": {"c"}, "voxel_size": (1.0, 2.0)}
    assert cellmap_score(
        {"c": permute_pred[pred]}, {"c": permute_truth[truth]}, **kwargs
    ) == pytest.approx(cellmap_score({"c": pred}, {"c": truth}, **kwargs))
