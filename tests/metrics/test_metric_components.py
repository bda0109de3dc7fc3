import subprocess
import sys

import numpy as np
import pytest

from bioim2im.builtins import metrics as metrics_plugin
from bioim2im.errors import UserError
from bioim2im.plugin.registry import ComponentRegistry, Registrar

NAMES = ["dice", "instance_ap", "iou", "mae", "nrmse", "pearson", "psnr", "ssim"]


@pytest.fixture(scope="module")
def registry() -> ComponentRegistry:
    reg = ComponentRegistry()
    metrics_plugin.bioim2im_register_metrics(Registrar(reg, "metric", "bioim2im", "0"))
    return reg


def build(registry: ComponentRegistry, name: str, **params):
    return registry.get("metric", name).build(params, spatial_dims=2)


def labels() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((16, 16), dtype=np.uint8)
    truth[1:5, 1:5] = 1
    truth[8:14, 8:14] = 2
    pred = np.zeros_like(truth)
    pred[1:5, 2:6] = 4  # IoU 12/20 = 0.6 with object 1
    pred[8:14, 8:14] = 9
    return pred, truth


def test_every_metric_is_registered_with_a_description(registry):
    assert registry.names("metric") == NAMES
    for name in NAMES:
        assert registry.get("metric", name).description


def test_parameters_come_from_the_factory_signatures(registry):
    fields = {name: set(registry.get("metric", name).params.model_fields) for name in NAMES}
    assert fields == {
        "dice": {"classes"},
        "iou": {"classes"},
        "instance_ap": {"threshold"},
        "psnr": {"data_range"},
        "ssim": {"data_range"},
        "pearson": set(),
        "mae": set(),
        "nrmse": set(),
    }
    with pytest.raises(UserError, match="metric 'dice' cannot be built"):
        build(registry, "dice", classes="all")
    with pytest.raises(UserError, match="scale: Extra inputs are not permitted"):
        build(registry, "mae", scale=2)


def test_invalid_values_are_user_errors(registry):
    with pytest.raises(UserError, match="threshold"):
        build(registry, "instance_ap", threshold=1.5)
    with pytest.raises(UserError, match="data_range"):
        build(registry, "psnr", data_range=0)


def test_semantic_components(registry):
    pred, truth = labels()
    # As masks: 48 shared pixels of 52 predicted and 52 true.
    assert build(registry, "dice", classes=[1, 2])(pred > 0, truth > 0) == pytest.approx(
        {"dice": (12 / 13 + 1.0) / 2, "dice/1": 12 / 13, "dice/2": 1.0}
    )
    assert build(registry, "iou")(pred > 0, truth > 0) == pytest.approx(
        {"iou": 6 / 7, "iou/1": 6 / 7}
    )
    # As label maps, no predicted id is a true class.
    scores = build(registry, "iou")(pred, truth)
    assert scores == {"iou": 0.0, "iou/1": 0.0, "iou/2": 0.0, "iou/4": 0.0, "iou/9": 0.0}


def test_instance_ap_reports_ap_precision_recall_f1(registry):
    pred, truth = labels()
    assert build(registry, "instance_ap")(pred, truth) == {
        "instance_ap": 1.0,
        "precision@0.50": 1.0,
        "recall@0.50": 1.0,
        "f1@0.50": 1.0,
    }
    assert build(registry, "instance_ap", threshold=0.7)(pred, truth) == {
        "instance_ap": pytest.approx(1 / 3),
        "precision@0.70": 0.5,
        "recall@0.70": 0.5,
        "f1@0.70": 0.5,
    }


def test_regression_components_use_their_name_as_key(registry):
    rng = np.random.default_rng(0)
    truth = rng.random((16, 16))
    pred = truth + rng.normal(0, 0.05, truth.shape)
    for name in ("psnr", "ssim", "pearson", "mae", "nrmse"):
        scores = build(registry, name)(pred, truth)
        assert list(scores) == [name]
        assert np.isfinite(scores[name])
    fixed = build(registry, "psnr", data_range=2.0)(pred, truth)["psnr"]
    assert fixed == pytest.approx(
        build(registry, "psnr")(pred, truth)["psnr"] + 20 * np.log10(2 / np.ptp(truth))
    )


@pytest.mark.parametrize("name", NAMES)
def test_a_leading_channel_axis_of_size_one_is_ignored(registry, name):
    pred, truth = labels()
    metric = build(registry, name)
    assert metric(pred[None], truth[None]) == pytest.approx(metric(pred, truth), nan_ok=True)


def test_the_plugin_module_imports_no_heavy_library():
    code = (
        "import sys, bioim2im.builtins.metrics; "
        "print(sorted({'scipy', 'skimage', 'torch', 'monai'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
