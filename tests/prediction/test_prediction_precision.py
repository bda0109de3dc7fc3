"""``predict.amp`` chooses the network's precision in prediction, whatever ``train.amp`` was:
bf16 on the CPU gives probabilities close to full precision's, not the same ones, and "off"
gives full precision back to a run trained in bf16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bioim2im.api import predict
from bioim2im.formats import load_model


def _probabilities(run: Path, image: np.ndarray, *settings: str) -> np.ndarray:
    return predict(run, image, overrides=settings, device="cpu")["prob"].astype(np.float64)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    from bioim2im.data.synthetic import nuclei

    return nuclei((96, 80), seed=5)[0]


def test_the_default_follows_the_training_precision(run_2d: Path) -> None:
    assert load_model(run_2d, device="cpu").amp_dtype is None
    trained_bf16 = load_model(run_2d, ["train.amp=bf16"], device="cpu")
    assert trained_bf16.amp_dtype is torch.bfloat16
    assert load_model(run_2d, ["train.amp=bf16", "predict.amp=off"], "cpu").amp_dtype is None


def test_bf16_on_the_cpu_is_close_to_full_precision_but_not_it(
    run_2d: Path, image: np.ndarray
) -> None:
    full = _probabilities(run_2d, image)
    half = _probabilities(run_2d, image, "predict.amp=bf16")
    assert full.shape == half.shape
    difference = np.abs(full - half)
    # bf16 keeps 8 bits of each value: the network's arithmetic changed, by little.
    assert difference.max() > 1e-4
    assert difference.max() < 0.05
    assert ((full > 0.5) == (half > 0.5)).mean() > 0.99
    back = _probabilities(run_2d, image, "train.amp=bf16", "predict.amp=off")
    np.testing.assert_array_equal(back, full)


def test_an_unknown_precision_is_refused_with_the_choices(run_2d: Path, cli, tmp_path) -> None:
    from predict_helpers import nuclei_image

    source = nuclei_image(tmp_path / "in.tif", (64, 64), seed=3)
    assert source.is_file()
    result = cli(
        "predict", run_2d, "-i", source, "-o", tmp_path / "out", "--set", "predict.amp=half"
    )
    assert result.code == 2
    assert "predict.amp" in result.err and "'half'" in result.err and "bf16" in result.err
    assert not (tmp_path / "out").exists()
