import math

import numpy as np
import pytest
from skimage.metrics import (
    normalized_root_mse,
    peak_signal_noise_ratio,
    structural_similarity,
)

from bioim2im.metrics.regression import mae, nrmse, pearson, psnr, regression_metrics, ssim


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    truth = rng.normal(3.0, 2.0, (32, 32))
    return truth + rng.normal(0, 0.5, truth.shape), truth


@pytest.fixture
def stack() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    truth = rng.random((9, 20, 20)).astype(np.float32)
    return truth + rng.normal(0, 0.1, truth.shape).astype(np.float32), truth


def test_psnr_agrees_with_skimage(pair):
    pred, truth = pair
    span = truth.max() - truth.min()
    assert psnr(pred, truth) == pytest.approx(peak_signal_noise_ratio(truth, pred, data_range=span))
    assert psnr(pred, truth, data_range=20.0) == pytest.approx(
        peak_signal_noise_ratio(truth, pred, data_range=20.0)
    )


def test_psnr_hand_computed():
    truth = np.array([[0.0, 1.0], [0.0, 1.0]])
    pred = truth + 0.1  # mse 0.01, range 1 -> 20 dB
    assert psnr(pred, truth) == pytest.approx(20.0)


def test_ssim_agrees_with_skimage_in_2d_and_3d(pair, stack):
    pred, truth = pair
    span = truth.max() - truth.min()
    assert ssim(pred, truth) == pytest.approx(structural_similarity(truth, pred, data_range=span))
    pred, truth = stack
    span = float(truth.max() - truth.min())
    assert ssim(pred, truth, data_range=1.0) == pytest.approx(
        structural_similarity(truth.astype(float), pred.astype(float), data_range=1.0)
    )
    assert ssim(pred, truth) == pytest.approx(
        structural_similarity(truth.astype(float), pred.astype(float), data_range=span)
    )


def test_ssim_shrinks_its_window_for_thin_stacks(stack):
    pred, truth = stack[0][:4], stack[1][:4]
    expected = structural_similarity(
        truth.astype(float), pred.astype(float), data_range=float(np.ptp(truth)), win_size=3
    )
    assert ssim(pred, truth) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 3"):
        ssim(pred[:2], truth[:2])


def test_nrmse_is_skimage_min_max(pair):
    pred, truth = pair
    assert nrmse(pred, truth) == pytest.approx(
        normalized_root_mse(truth, pred, normalization="min-max")
    )
    rmse = np.sqrt(np.mean((pred - truth) ** 2))
    assert nrmse(pred, truth) == pytest.approx(rmse / (truth.max() - truth.min()))


def test_pearson_and_mae(pair):
    pred, truth = pair
    assert pearson(pred, truth) == pytest.approx(np.corrcoef(pred.ravel(), truth.ravel())[0, 1])
    assert pearson(-2 * truth + 1, truth) == pytest.approx(-1.0)
    assert mae(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 1.0])) == pytest.approx(4 / 3)


def test_integer_images_are_compared_as_floats():
    truth = np.array([[0, 200], [100, 255]], dtype=np.uint8)
    pred = np.array([[10, 190], [100, 255]], dtype=np.uint8)  # no uint8 wrap-around
    assert mae(pred, truth) == pytest.approx(5.0)


def test_identical_images_score_perfectly(stack):
    truth = stack[1]
    assert regression_metrics(truth, truth) == {
        "psnr": math.inf,
        "ssim": 1.0,
        "pearson": pytest.approx(1.0),
        "mae": 0.0,
        "nrmse": 0.0,
    }


def test_constant_images_give_nan_without_warnings():
    truth = np.full((8, 8), 3.0)
    pred = truth + np.eye(8)
    scores = regression_metrics(pred, truth)
    assert math.isnan(scores["psnr"])
    assert math.isnan(scores["ssim"])
    assert math.isnan(scores["pearson"])
    assert math.isnan(scores["nrmse"])
    assert scores["mae"] == pytest.approx(1 / 8)
    assert psnr(pred, truth, data_range=1.0) == pytest.approx(
        peak_signal_noise_ratio(truth, pred, data_range=1.0)
    )


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        mae(np.zeros((4, 4)), np.zeros((4, 5)))
