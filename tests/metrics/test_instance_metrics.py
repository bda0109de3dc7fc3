import numpy as np
import pytest
from scipy.spatial.distance import cdist
from skimage.metrics import hausdorff_distance

from bioim2im.metrics.instance import (
    THRESHOLDS,
    Overlaps,
    hausdorff_distances,
    instance_metrics,
    instance_overlaps,
    match_at_threshold,
    match_overlapping,
    max_distance,
)


def split_object() -> tuple[np.ndarray, np.ndarray]:
    """Truth: object 1 (6x6) and object 7 (8x8); the prediction shifts 1 by a column and
    splits 7 into two 8x4 halves (IoU 0.5 each)."""
    truth = np.zeros((20, 20), dtype=np.uint16)
    truth[2:8, 2:8] = 1
    truth[10:18, 10:18] = 7
    pred = np.zeros_like(truth)
    pred[2:8, 3:9] = 3
    pred[10:18, 10:14] = 5
    pred[10:18, 14:18] = 6
    return pred, truth


def dense_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    true_ids = [i for i in np.unique(truth) if i]
    pred_ids = [i for i in np.unique(pred) if i]
    matrix = np.zeros((len(true_ids), len(pred_ids)))
    for r, t in enumerate(true_ids):
        for c, p in enumerate(pred_ids):
            a, b = truth == t, pred == p
            matrix[r, c] = (a & b).sum() / (a | b).sum()
    return matrix


def test_overlaps_list_each_overlapping_pair_with_its_iou():
    pred, truth = split_object()
    overlaps = instance_overlaps(pred, truth)
    assert overlaps.true_ids.tolist() == [1, 7]
    assert overlaps.pred_ids.tolist() == [3, 5, 6]
    assert list(zip(overlaps.rows.tolist(), overlaps.cols.tolist(), strict=True)) == [
        (0, 0),
        (1, 1),
        (1, 2),
    ]
    assert overlaps.iou == pytest.approx([30 / 42, 0.5, 0.5])


def test_overlaps_agree_with_a_dense_computation():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 6, (12, 12)) * 1000
    pred = rng.integers(0, 5, (12, 12))
    overlaps = instance_overlaps(pred, truth)
    matrix = np.zeros((len(overlaps.true_ids), len(overlaps.pred_ids)))
    matrix[overlaps.rows, overlaps.cols] = overlaps.iou
    assert matrix == pytest.approx(dense_iou(pred, truth))


def test_split_object_counts_at_each_threshold():
    pred, truth = split_object()
    scores = instance_metrics(pred, truth)
    # At 0.50 object 1 (IoU 5/7) and one half of object 7 (IoU 0.5) match: TP 2, FP 1, FN 0.
    assert scores["precision@0.50"] == pytest.approx(2 / 3)
    assert scores["recall@0.50"] == 1.0
    assert scores["f1@0.50"] == pytest.approx(4 / 5)
    assert scores["ap@0.50"] == pytest.approx(2 / 3)
    # From 0.55 to 0.70 only object 1 matches: TP 1, FP 2, FN 1.
    for t in ("0.55", "0.60", "0.65", "0.70"):
        assert scores[f"precision@{t}"] == pytest.approx(1 / 3)
        assert scores[f"recall@{t}"] == 0.5
        assert scores[f"f1@{t}"] == pytest.approx(2 / 5)
        assert scores[f"ap@{t}"] == 0.25
    # Above 5/7 nothing matches: TP 0, FP 3, FN 2.
    for t in ("0.75", "0.80", "0.85", "0.90", "0.95"):
        assert scores[f"ap@{t}"] == 0.0
    assert scores["ap@0.50:0.95"] == pytest.approx((2 / 3 + 4 * 0.25) / 10)
    assert scores["mean_matched_iou@0.50"] == pytest.approx((5 / 7 + 0.5) / 2)
    assert scores["pq@0.50"] == pytest.approx((5 / 7 + 0.5) / 2 * 4 / 5)
    # Object 1 is one column off; object 7's matched half leaves voxels 4 columns away.
    assert scores["hausdorff"] == pytest.approx((1 + 4) / 2)


def test_keys_cover_every_threshold():
    pred, truth = split_object()
    keys = set(instance_metrics(pred, truth))
    assert [f"{t:.2f}" for t in THRESHOLDS] == [f"0.{50 + 5 * i}" for i in range(10)]
    for t in THRESHOLDS:
        assert {f"precision@{t:.2f}", f"recall@{t:.2f}", f"f1@{t:.2f}", f"ap@{t:.2f}"} <= keys
    assert {"ap@0.50:0.95", "pq@0.50", "mean_matched_iou@0.50", "hausdorff"} <= keys


def test_invariant_to_label_permutation():
    rng = np.random.default_rng(2)
    pred, truth = split_object()
    permute_pred = np.zeros(10, dtype=np.uint64)
    permute_pred[[3, 5, 6]] = rng.permutation([2**40, 9, 4])
    permute_truth = np.zeros(8, dtype=np.uint64)
    permute_truth[[1, 7]] = [5, 2]
    assert instance_metrics(permute_pred[pred], permute_truth[truth]) == pytest.approx(
        instance_metrics(pred, truth)
    )


def test_empty_images():
    empty = np.zeros((10, 10), dtype=np.uint8)
    objects = np.zeros_like(empty)
    objects[2:5, 2:5] = 1
    objects[6:9, 6:9] = 2

    both_empty = instance_metrics(empty, empty)
    assert all(v == 1.0 for k, v in both_empty.items() if k != "hausdorff")
    assert both_empty["hausdorff"] == 0.0

    cap = max_distance((10, 10), (1, 1))
    for pred, truth in ((empty, objects), (objects, empty)):
        scores = instance_metrics(pred, truth)
        assert all(v == 0.0 for k, v in scores.items() if k != "hausdorff")
        assert scores["hausdorff"] == cap


def test_perfect_prediction():
    _, truth = split_object()
    scores = instance_metrics(truth, truth)
    assert all(v == 1.0 for k, v in scores.items() if k != "hausdorff")
    assert scores["hausdorff"] == 0.0


def test_matching_at_a_threshold_prefers_more_matches_then_higher_iou():
    # Truth 0 overlaps predictions 0 (0.9) and 1 (0.6); truth 1 overlaps only prediction 0 (0.7).
    overlaps = Overlaps(
        true_ids=np.array([1, 2]),
        pred_ids=np.array([1, 2]),
        rows=np.array([0, 0, 1]),
        cols=np.array([0, 1, 0]),
        iou=np.array([0.9, 0.6, 0.7]),
    )
    assert match_at_threshold(overlaps, 0.5).tolist() == [1, 2]
    assert match_at_threshold(overlaps, 0.65).tolist() == [0]
    # Matching every overlap for the largest total IoU: 0.6 + 0.7 beats 0.9 alone.
    assert match_overlapping(overlaps).tolist() == [1, 2]


def test_matching_for_total_iou_is_not_greedy_in_count():
    # Truth 0 overlaps prediction 0 (0.9) and 1 (0.05); truth 1 overlaps prediction 0 (0.1).
    overlaps = Overlaps(
        true_ids=np.array([1, 2]),
        pred_ids=np.array([1, 2]),
        rows=np.array([0, 0, 1]),
        cols=np.array([0, 1, 0]),
        iou=np.array([0.9, 0.05, 0.1]),
    )
    assert match_overlapping(overlaps).tolist() == [0]


def random_blob(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    blob = np.zeros(shape, dtype=bool)
    centre = np.array(shape) // 2
    for _ in range(6):
        offset = rng.integers(-3, 4, len(shape))
        box = tuple(slice(c + o - 2, c + o + 3) for c, o in zip(centre, offset, strict=True))
        blob[box] = True
    return blob


def test_hausdorff_agrees_with_skimage():
    rng = np.random.default_rng(3)
    for shape in ((24, 24), (14, 14, 14)):
        a, b = random_blob(rng, shape), random_blob(rng, shape)
        truth, pred = a.astype(np.uint8), b.astype(np.uint8) * 4
        distance = hausdorff_distances(pred, truth, (np.array([0]), np.array([0])), cap=np.inf)
        assert distance == pytest.approx([hausdorff_distance(a, b)])


def test_hausdorff_uses_voxel_size():
    rng = np.random.default_rng(4)
    a, b = random_blob(rng, (12, 16, 16)), random_blob(rng, (12, 16, 16))
    voxel_size = (3.0, 1.0, 0.5)
    pa, pb = np.argwhere(a) * voxel_size, np.argwhere(b) * voxel_size
    between = cdist(pa, pb)
    expected = max(between.min(axis=1).max(), between.min(axis=0).max())
    distance = hausdorff_distances(
        b, a, (np.array([0]), np.array([0])), voxel_size=voxel_size, cap=np.inf
    )
    assert distance == pytest.approx([expected])


def test_hausdorff_caps_and_counts_unmatched_true_objects_as_the_cap():
    pred, truth = split_object()
    capped = instance_metrics(pred, truth, hausdorff_cap=2.0)["hausdorff"]
    assert capped == pytest.approx((1 + 2) / 2)
    only_first = np.where(pred == 3, pred, 0)
    # Object 7 is unmatched: it counts as the default cap, half of 20 x 0.5 physical units.
    scores = instance_metrics(only_first, truth, voxel_size=0.5)
    assert scores["hausdorff"] == pytest.approx((0.5 + 5.0) / 2)


def test_3d_objects():
    truth = np.zeros((10, 10, 10), dtype=np.uint32)
    truth[0:4, 0:4, 0:4] = 1
    truth[5:10, 5:10, 5:10] = 2
    pred = np.zeros_like(truth)
    pred[0:4, 0:4, 1:5] = 8  # IoU 48 / 80 = 0.6 with object 1
    pred[5:10, 5:10, 5:10] = 9
    scores = instance_metrics(pred, truth, voxel_size=(2.0, 1.0, 1.0))
    assert scores["ap@0.60"] == 1.0
    assert scores["ap@0.65"] == pytest.approx(1 / 3)
    assert scores["mean_matched_iou@0.50"] == pytest.approx((0.6 + 1.0) / 2)
    assert scores["hausdorff"] == pytest.approx((1.0 + 0.0) / 2)


def test_voxel_size_needs_one_positive_value_per_axis():
    pred, truth = split_object()
    for voxel_size in ((1.0, 2.0, 3.0), (1.0, 0.0)):
        with pytest.raises(ValueError, match="voxel_size"):
            instance_metrics(pred, truth, voxel_size=voxel_size)


def test_rejects_non_integer_labels():
    with pytest.raises(ValueError, match="integers"):
        instance_metrics(np.zeros((4, 4)), np.zeros((4, 4), dtype=np.uint8))
