"""Built-in metrics: each factory returns ``metric(pred, truth) -> dict[str, float]`` for one image.

The main value is under the metric's name; arrays may carry a leading channel axis of size 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, PositiveFloat

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar

if TYPE_CHECKING:
    import numpy as np

Metric = Callable[["np.ndarray", "np.ndarray"], dict[str, float]]


def _per_image(scores: Callable[[np.ndarray, np.ndarray], dict[str, float]]) -> Metric:
    from bioim2im.metrics import squeeze_channel

    def metric(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        return scores(squeeze_channel(pred), squeeze_channel(truth))

    return metric


def dice(*, classes: list[int] | None = None) -> Metric:
    """Dice overlap per class and its mean (label maps or binary masks).

    Args:
        classes: The class values scored (default: every value but 0 found in the prediction
            or the truth); the mean is over these.
    """
    from bioim2im.metrics.semantic import dice as scores

    return _per_image(lambda pred, truth: scores(pred, truth, classes=classes))


def iou(*, classes: list[int] | None = None) -> Metric:
    """Intersection over union (Jaccard) per class and its mean (label maps or binary masks).

    Args:
        classes: The class values scored (default: every value but 0 found in the prediction
            or the truth); the mean is over these.
    """
    from bioim2im.metrics.semantic import iou as scores

    return _per_image(lambda pred, truth: scores(pred, truth, classes=classes))


def instance_ap(*, threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5) -> Metric:
    """Instance average precision TP/(TP+FP+FN) at an IoU threshold, with precision, recall, f1.

    Args:
        threshold: IoU at which a predicted object matches a true one.
    """
    from bioim2im.metrics.instance import detection_scores, instance_overlaps

    t = f"{threshold:.2f}"

    def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        # Validation hands label images over as float arrays of whole numbers.
        detected = detection_scores(instance_overlaps(pred, truth.astype("int64")), threshold)
        return {"instance_ap": detected.pop(f"ap@{t}"), **detected}

    return _per_image(scores)


def psnr(*, data_range: PositiveFloat | None = None) -> Metric:
    """Peak signal-to-noise ratio in dB; data_range defaults to the truth's max - min.

    Args:
        data_range: The range of possible values (e.g. 1.0 for images in [0, 1]); default:
            the truth's max - min.
    """
    from bioim2im.metrics.regression import psnr as score

    return _per_image(lambda pred, truth: {"psnr": score(pred, truth, data_range=data_range)})


def ssim(*, data_range: PositiveFloat | None = None) -> Metric:
    """Structural similarity, 2D or 3D; data_range defaults to the truth's max - min.

    Args:
        data_range: The range of possible values (e.g. 1.0 for images in [0, 1]); default:
            the truth's max - min.
    """
    from bioim2im.metrics.regression import ssim as score

    return _per_image(lambda pred, truth: {"ssim": score(pred, truth, data_range=data_range)})


def pearson() -> Metric:
    """Pearson correlation coefficient over all pixels."""
    from bioim2im.metrics.regression import pearson as score

    return _per_image(lambda pred, truth: {"pearson": score(pred, truth)})


def mae() -> Metric:
    """Mean absolute error."""
    from bioim2im.metrics.regression import mae as score

    return _per_image(lambda pred, truth: {"mae": score(pred, truth)})


def nrmse() -> Metric:
    """Root mean squared error divided by the truth's max - min."""
    from bioim2im.metrics.regression import nrmse as score

    return _per_image(lambda pred, truth: {"nrmse": score(pred, truth)})


@hookimpl
def bioim2im_register_metrics(registry: Registrar) -> None:
    for factory in (dice, iou, instance_ap, psnr, ssim, pearson, mae, nrmse):
        registry.add(factory.__name__, factory)
