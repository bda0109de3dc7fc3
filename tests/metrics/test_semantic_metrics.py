import numpy as np
import pytest

from bioim2im.metrics.semantic import dice, iou, semantic_metrics


def squares_2d() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 squares sharing a 2x4 band: |P∩T| = 8, |P| = |T| = 16."""
    truth = np.zeros((8, 8), dtype=np.uint8)
    pred = np.zeros_like(truth)
    truth[0:4, 0:4] = 1
    pred[2:6, 0:4] = 1
    return pred, truth


def test_two_squares_have_exact_dice_and_iou():
    pred, truth = squares_2d()
    assert dice(pred, truth) == {"dice": 0.5, "dice/1": 0.5}
    assert iou(pred, truth) == pytest.approx({"iou": 1 / 3, "iou/1": 1 / 3})


def test_binary_masks_score_as_class_one():
    pred, truth = squares_2d()
    assert semantic_metrics(pred.astype(bool), truth.astype(bool)) == semantic_metrics(pred, truth)


def test_label_map_scores_each_present_class_and_their_mean():
    truth = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    pred = np.array([[1, 1, 1, 2], [1, 1, 2, 2], [0, 0, 0, 3]])
    scores = semantic_metrics(pred, truth)
    # class 1: 4 ∩ 5; class 2: 3 ∩ 4; class 3: predicted once, absent from truth.
    assert scores["dice/1"] == pytest.approx(8 / 9)
    assert scores["dice/2"] == pytest.approx(6 / 7)
    assert scores["dice/3"] == 0.0
    assert scores["iou/1"] == pytest.approx(4 / 5)
    assert scores["iou/2"] == pytest.approx(3 / 4)
    assert scores["dice"] == pytest.approx((8 / 9 + 6 / 7) / 3)
    assert scores["iou"] == pytest.approx((4 / 5 + 3 / 4) / 3)
    assert set(scores) == {"dice", "iou", *(f"{m}/{c}" for m in ("dice", "iou") for c in (1, 2, 3))}


def test_given_classes_restrict_the_mean_and_absent_ones_score_one():
    truth = np.array([[1, 1, 2, 2]])
    pred = np.array([[1, 0, 2, 2]])
    scores = dice(pred, truth, classes=[2, 5])
    assert scores == {"dice": 1.0, "dice/2": 1.0, "dice/5": 1.0}


def test_empty_images_score_one():
    empty = np.zeros((5, 5), dtype=np.uint8)
    assert semantic_metrics(empty, empty) == {"dice": 1.0, "iou": 1.0}


def test_empty_prediction_of_a_present_class_scores_zero():
    truth = np.zeros((5, 5), dtype=np.uint8)
    truth[1:3, 1:3] = 1
    assert semantic_metrics(np.zeros_like(truth), truth) == {
        "dice": 0.0,
        "dice/1": 0.0,
        "iou": 0.0,
        "iou/1": 0.0,
    }


def test_3d_cubes():
    truth = np.zeros((6, 6, 6), dtype=np.uint16)
    pred = np.zeros_like(truth)
    truth[0:4, 0:4, 0:4] = 3
    pred[1:5, 0:4, 0:4] = 3  # overlap 3x4x4 = 48 of 64 each
    assert dice(pred, truth)["dice/3"] == pytest.approx(96 / 128)
    assert iou(pred, truth)["iou/3"] == pytest.approx(48 / 80)


def test_symmetric_in_prediction_and_truth():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (16, 16)), rng.integers(0, 4, (16, 16))
    assert semantic_metrics(a, b) == pytest.approx(semantic_metrics(b, a))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))
