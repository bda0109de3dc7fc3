"""Per-crop counts and their pooling equal the CellMap challenge's (``score_instance``,
``score_semantic``, ``empty_label_score``, ``combine_scores``), case by case.

The expected values are facts: the official evaluator (janelia-cellmap/
cellmap-segmentation-challenge at commit 6b9ad68, ``evaluate.score_instance``) was run offline on
exactly these arrays, and its results are copied here (its own tests' cases first, then cases
built to exercise one rule each: the too-many cutoff on the largest true id, the Hausdorff term
after its partial remap, connected components of float arrays). No code of the challenge is used.
"""

from __future__ import annotations

import numpy as np
import pytest

from bioim2im_cellmap.metrics import (
    combine,
    components,
    instance_counts,
    match_instances,
    missing_counts,
    ratio_cutoff,
    semantic_counts,
)


def _counts(pred, truth, vs):
    return instance_counts(np.asarray(pred), np.asarray(truth), vs)


def _expect(got, tp, fp, fn, n, total, status="scored"):
    assert (got["tp"], got["fp"], got["fn"], got["n_hausdorff"], got["status"]) == (
        tp,
        fp,
        fn,
        n,
        status,
    )
    assert got["hausdorff_norm_sum"] == pytest.approx(total, abs=1e-12)


# --- the official tests' cases (tests/test_evaluate_metrics.py, test_evaluate_refactored.py) ---


def test_perfect_match():
    a = np.array([[0, 1, 1], [0, 2, 2]], np.uint8)
    _expect(_counts(a, a, (1, 1)), 2, 0, 0, 2, 2.0)


def test_simple_shift():
    truth = np.array([[1, 1, 0], [0, 0, 0]], np.uint8)
    pred = np.array([[0, 2, 2], [0, 0, 0]], np.uint8)
    _expect(_counts(pred, truth, (1, 1)), 1, 0, 0, 1, 0.9929887478997818)


def _two_blocks():
    a = np.zeros((4, 4), np.uint8)
    a[0:2, 0:2] = 1
    a[2:4, 2:4] = 2
    return a


def test_all_false_positives_and_all_false_negatives():
    empty = np.zeros((4, 4), np.uint8)
    _expect(_counts(_two_blocks(), empty, (1, 1)), 0, 2, 0, 2, 1.9720533069111525)
    _expect(_counts(empty, _two_blocks(), (1, 1)), 0, 0, 2, 2, 1.9720533069111525)


def test_empty_against_empty():
    empty = np.zeros((4, 4), np.uint8)
    _expect(_counts(empty, empty, (1, 1)), 0, 0, 0, 0, 0.0)


def test_partial_match():
    truth = np.zeros((6, 6), np.uint8)
    truth[0:2, 0:2], truth[0:2, 4:6], truth[4:6, 0:2] = 1, 2, 3
    pred = np.zeros((6, 6), np.uint8)
    pred[0:2, 0:2], pred[0:2, 4:6], pred[4:6, 4:6] = 5, 6, 7
    _expect(_counts(pred, truth, (1, 1)), 2, 1, 1, 4, 3.9582267440213297)


def test_diagonal_voxels_are_one_object():
    a = np.array([[[0, 1], [1, 0]], [[0, 1], [1, 0]]], np.uint8)
    _expect(_counts(a, a, (1, 1, 1)), 1, 0, 0, 1, 1.0)


def test_too_many_predictions_for_one_true_object():
    truth = np.ones((10, 10), np.uint8)
    pred = np.arange(100, dtype=np.uint16).reshape(10, 10) + 1
    _expect(_counts(pred, truth, (4, 4)), 0, 0, 0, 0, 0.0, "skipped_too_many_instances")


@pytest.mark.parametrize(
    ("n", "cutoff"),
    [
        (1, 50.936537653899094),
        (2, 43.51600230178197),
        (5, 28.393972058572118),
        (10, 16.766764161830636),
        (20, 10.91578194443671),
        (100, 10.000000103057681),
    ],
)
def test_ratio_cutoff(n, cutoff):
    assert ratio_cutoff(n) == pytest.approx(cutoff, rel=1e-12)


# --- one rule each ---


def test_cutoff_counts_the_largest_true_id_not_the_objects():
    truth = np.zeros((1, 20, 20), np.uint16)
    truth[0, 0, 0], truth[0, 19, 19] = 1, 100
    pred = np.zeros_like(truth)
    pred[0, ::2, ::2] = 1  # 100 isolated voxels
    _expect(_counts(pred, truth, (1, 1, 1)), 1, 99, 1, 101, 100.71317083331068)
    truth[0, 19, 19] = 2  # the same two objects, ids 1 and 2: 50 per object is too many
    _expect(_counts(pred, truth, (1, 1, 1)), 0, 0, 0, 0, 0.0, "skipped_too_many_instances")


def test_unmatched_component_numbered_like_a_matched_true_id_merges_with_its_match():
    # Component A (numbered 1) matches truth 2 and is renamed 2; B keeps its number 2.
    shape = (8, 16, 16)
    truth = np.zeros(shape, np.uint8)
    truth[4, 0, 0:2], truth[4, 0, 10:12] = 1, 2
    pred = np.zeros(shape, np.uint8)
    pred[4, 0, 10:12], pred[4, 2, 0:2] = 5, 9
    _expect(_counts(pred, truth, (1, 1, 1)), 1, 1, 1, 3, 2.931848125915172)


def test_unmatched_component_numbered_like_an_unmatched_true_id_is_measured_against_it():
    shape = (8, 16, 16)
    truth = np.zeros(shape, np.uint8)
    truth[4, 3, 4:6], truth[4, 9, 10:12] = 1, 2
    pred = np.zeros(shape, np.uint8)
    pred[4, 9, 10:12], pred[4, 4, 4:6] = 7, 8
    _expect(_counts(pred, truth, (1, 1, 1)), 1, 1, 1, 3, 2.9715543524016907)


def test_without_any_overlap_true_id_k_is_measured_against_component_k():
    shape = (8, 16, 16)
    truth = np.zeros(shape, np.uint8)
    truth[4, 0:2, 0:2] = 1
    pred = np.zeros(shape, np.uint8)
    pred[4, 2:4, 0:2] = 1
    _expect(_counts(pred, truth, (1, 1, 1)), 0, 1, 1, 2, 1.9658588102301655)
    flat = np.zeros((1, 10, 10), np.uint8)
    flat[0, 0:2, 0:2] = 1
    apart = np.zeros_like(flat)
    apart[0, 3:5, 3:5] = 1
    _expect(_counts(apart, flat, (1, 1, 1)), 0, 1, 1, 2, 1.9942634166662137)


def test_empty_prediction_and_gaps_in_true_ids():
    shape = (8, 16, 16)
    truth = np.zeros(shape, np.uint8)
    truth[1:3, 1:3, 1:3], truth[5:7, 9:12, 9:12] = 1, 2
    _expect(_counts(np.zeros(shape, np.uint8), truth, (1, 1, 1)), 0, 0, 2, 2, 1.9545654172767815)
    gaps = np.zeros(shape, np.uint8)
    gaps[4, 0:2, 0:2], gaps[4, 8:10, 8:10] = 1, 7
    pred = (gaps > 0).astype(np.uint8) * 3
    _expect(_counts(pred, gaps, (1, 1, 1)), 2, 0, 0, 2, 2.0)


def test_touching_objects_with_different_ids_stay_apart():
    shape = (8, 16, 16)
    truth = np.zeros(shape, np.uint8)
    truth[4, 0:2, 0:4] = 1
    pred = np.zeros(shape, np.uint8)
    pred[4, 0:2, 0:2], pred[4, 0:2, 2:4] = 1, 2
    _expect(_counts(pred, truth, (1, 1, 1)), 1, 1, 0, 2, 1.9658588102301655)


def _float_labels():
    f = np.zeros((1, 4, 8), np.float32)
    f[0, 0, 0:2], f[0, 0, 2:4], f[0, 2, 0] = 1.0, 1.5, 0.3
    f[0, 3, 6:8] = np.nan
    return f


def test_float_labels_are_components_of_exact_values_and_each_nan_voxel_its_own():
    labelled, n = components(_float_labels())
    assert n == 5
    assert labelled[0].tolist() == [
        [1, 1, 2, 2, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [3, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 4, 5],
    ]
    truth = np.zeros((1, 4, 8), np.uint8)
    truth[0, 0, 0:4] = 1
    _expect(_counts(_float_labels(), truth, (1, 1, 1)), 1, 4, 0, 5, 4.985658541665535)


# --- semantic counts, missing classes and pooling (tests/test_evaluate_metrics.py) ---


def test_semantic_counts():
    truth = np.array([[0, 1], [1, 1]], np.float32)
    assert semantic_counts(truth, truth) == {"tp": 3, "fp": 0, "fn": 0, "status": "scored"}
    partial = np.array([[0, 1], [0, 1]], np.float32)
    got = semantic_counts(partial, truth)
    assert (got["tp"], got["fp"], got["fn"]) == (2, 0, 1)
    zeros = np.zeros((3, 3))
    assert semantic_counts(zeros, zeros)["tp"] == 0


def test_missing_classes():
    assert missing_counts(np.zeros((2, 2, 2), np.uint8), True)["fn"] == 0
    assert missing_counts(np.zeros((2, 2, 2), np.uint8), True)["n_hausdorff"] == 0
    ids = np.zeros((2, 2, 2), np.uint8)
    ids[0], ids[1] = 1, 2
    got = missing_counts(ids, True)
    assert (got["fn"], got["n_hausdorff"], got["status"]) == (2, 2, "missing")
    got = missing_counts(np.zeros((2, 2, 2), np.uint8), False)
    assert (got["fp"], got["fn"]) == (0, 8) and "iou" not in got


def test_pooling_over_crops():
    combined = combine(
        {
            "instance": [{"tp": 2, "fp": 0, "fn": 0, "hausdorff_norm_sum": 2.0, "n_hausdorff": 2}],
            "sem": [{"tp": 4, "fp": 2, "fn": 2}],
        },
        ["instance"],
    )
    assert combined["label_scores"]["instance"]["combined_score"] == 1.0
    assert combined["label_scores"]["sem"]["iou"] == 0.5
    assert combined["overall_instance_score"] == 1.0
    assert combined["overall_semantic_score"] == 0.5
    mito = combine(
        {
            "mito": [
                {"tp": 3, "fp": 1, "fn": 0, "hausdorff_norm_sum": 2.4, "n_hausdorff": 4},
                {"tp": 1, "fp": 0, "fn": 2, "hausdorff_norm_sum": 1.0, "n_hausdorff": 2},
            ]
        },
        ["mito"],
    )["label_scores"]["mito"]
    assert mito["f1"] == pytest.approx(8 / 11)
    assert mito["normalized_hausdorff_distance"] == pytest.approx(3.4 / 6)
    assert mito["combined_score"] == pytest.approx((8 / 11 * 3.4 / 6) ** 0.5)


# --- matching (tests/test_match_instance.py: match_instances on labels used as they are) ---


def _blocks(shape, *pairs):
    a = np.zeros(shape, np.uint16)
    for value, region in pairs:
        a[region] = value
    return a


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        (_blocks((3, 3), (1, np.s_[0, 0])), _blocks((3, 3), (1, np.s_[2, 2])), {}),
        (_blocks((4, 4), (1, np.s_[0:2, 0:2])), _blocks((4, 4), (1, np.s_[2:4, 2:4])), {}),
        (
            _blocks((6, 6), (1, np.s_[0:2, 0:2]), (2, np.s_[4:6, 4:6])),
            _blocks((6, 6), (1, np.s_[0:2, 0:2]), (2, np.s_[4:6, 4:6])),
            {1: 1, 2: 2},
        ),
        (
            _blocks((6, 6), (1, np.s_[0:2, 0:2]), (5, np.s_[4:6, 4:6])),
            _blocks((6, 6), (1, np.s_[0:2, 0:2]), (7, np.s_[4:6, 4:6])),
            {1: 1, 7: 5},
        ),
        (
            _blocks((2, 3), (1, np.s_[0:2, 0:2]), (2, np.s_[0:2, 2:3])),
            _blocks((2, 3), (1, np.s_[0:2, 0:3])),
            {1: 1},
        ),
        (_blocks((2, 2), (1, np.s_[0, :])), _blocks((2, 2), (1, np.s_[0, :])), {1: 1}),
    ],
    ids=["no overlap", "apart", "two objects", "ids with gaps", "higher IoU wins", "one pair"],
)
def test_matching(truth, pred, expected):
    assert match_instances(truth, pred, int(pred.max())) == expected


def test_matching_more_predictions_than_the_cutoff_allows():
    truth = np.ones((10, 10), np.uint16)
    pred = np.arange(100, dtype=np.uint16).reshape(10, 10) + 1
    assert match_instances(truth, pred, 100) == "skipped_too_many_instances"
