import math

import numpy as np
import pytest

from bioim2im.metrics import aggregate, compute, squeeze_channel
from bioim2im.metrics.instance import instance_metrics
from bioim2im.metrics.regression import regression_metrics
from bioim2im.metrics.semantic import semantic_metrics


def test_compute_dispatches_to_each_task_with_its_options():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (12, 12))
    image = rng.random((12, 12))
    assert compute("semantic", labels, labels.T, classes=[2]) == semantic_metrics(
        labels, labels.T, classes=[2]
    )
    assert compute("instance", labels, labels.T, voxel_size=0.5) == instance_metrics(
        labels, labels.T, voxel_size=0.5
    )
    assert compute("regression", image, image.T, data_range=1.0) == regression_metrics(
        image, image.T, data_range=1.0
    )
    with pytest.raises(ValueError, match="unknown task"):
        compute("detection", labels, labels)  # type: ignore[arg-type]


def test_aggregate_averages_each_key_over_the_images_that_have_it():
    rows = [
        {"dice": 0.5, "dice/1": 0.5},
        {"dice": 1.0, "dice/1": 0.8, "dice/2": 1.0},
        {"dice": math.nan, "dice/2": 0.0},
    ]
    assert aggregate(rows) == pytest.approx({"dice": 0.75, "dice/1": 0.65, "dice/2": 0.5})
    assert list(aggregate(rows)) == ["dice", "dice/1", "dice/2"]


def test_aggregate_of_only_nan_is_nan_without_warnings():
    assert math.isnan(aggregate([{"pearson": math.nan}, {"pearson": math.nan}])["pearson"])
    assert aggregate([]) == {}


def test_squeeze_channel_only_drops_a_leading_singleton_of_nd_images():
    assert squeeze_channel(np.zeros((1, 4, 5))).shape == (4, 5)
    assert squeeze_channel(np.zeros((1, 3, 4, 5))).shape == (3, 4, 5)
    assert squeeze_channel(np.zeros((2, 4, 5))).shape == (2, 4, 5)
    assert squeeze_channel(np.zeros((1, 5))).shape == (1, 5)
