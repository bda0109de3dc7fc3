"""Built-in losses, each a module called as ``loss(prediction, target, weight=None)``.

The prediction holds logits (B, C, *spatial). Class targets follow MONAI's switches: with
``to_onehot_y`` they are class indices (B, 1, *spatial), otherwise one channel per class in
{0, 1}; ``softmax`` treats the channels as exclusive classes and ``sigmoid`` as independent
masks. Regression targets are values shaped like the prediction. ``weight`` is a cost map
(B, 1, *spatial) >= 0: pixels of weight 0 do not count at all, the others count by their weight.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar

ClassWeights = list[NonNegativeFloat] | None
Smoothing = Annotated[float, Field(ge=0.0, lt=1.0)]


def _use_softmax(sigmoid: bool, softmax: bool) -> bool:
    """Whether the channels are exclusive classes; predictions are logits, so one must be chosen."""
    if sigmoid == softmax:
        raise ValueError(
            "set exactly one of sigmoid = true (independent channels, targets in {0, 1}) "
            "or softmax = true (exclusive classes)"
        )
    return softmax


def _check_activation(
    *, sigmoid: bool, softmax: bool, label_smoothing: float = 0.0, **_: Any
) -> None:
    use_softmax = _use_softmax(sigmoid, softmax)
    if label_smoothing and not use_softmax:
        raise ValueError("label_smoothing applies to the softmax cross-entropy only")


def _check_ssim(*, win_size: int, **_: Any) -> None:
    if win_size % 2 == 0:
        raise ValueError(f"win_size must be odd, got {win_size}")


def _classes(
    to_onehot_y: bool, include_background: bool = True, class_weights: ClassWeights = None
) -> Any:
    from bioim2im.builtins._losses import Classes

    weights = None if class_weights is None else tuple(class_weights)
    return Classes(to_onehot_y, include_background, weights)


def _overlap(score: Any, classes: Any, **options: Any) -> Any:
    from bioim2im.builtins._losses import OverlapLoss

    return OverlapLoss(score, classes, **options)


def dice(
    *,
    sigmoid: bool = False,
    softmax: bool = False,
    to_onehot_y: bool = False,
    include_background: bool = True,
    class_weights: ClassWeights = None,
    batch: bool = False,
    jaccard: bool = False,
    smooth_nr: NonNegativeFloat = 1e-5,
    smooth_dr: NonNegativeFloat = 1e-5,
) -> Any:
    """Soft Dice (or Jaccard) loss on sigmoid or softmax probabilities, as MONAI DiceLoss."""
    from bioim2im.builtins._losses import dice_score, jaccard_score

    return _overlap(
        jaccard_score if jaccard else dice_score,
        _classes(to_onehot_y, include_background, class_weights),
        softmax=_use_softmax(sigmoid, softmax),
        batch=batch,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
    )


def tversky(
    *,
    sigmoid: bool = False,
    softmax: bool = False,
    to_onehot_y: bool = False,
    include_background: bool = True,
    alpha: NonNegativeFloat = 0.5,
    beta: NonNegativeFloat = 0.5,
    batch: bool = False,
    smooth_nr: NonNegativeFloat = 1e-5,
    smooth_dr: NonNegativeFloat = 1e-5,
) -> Any:
    """Tversky loss: Dice with false positives weighted by alpha and false negatives by beta."""
    from bioim2im.builtins._losses import tversky_score

    return _overlap(
        functools.partial(tversky_score, alpha=alpha, beta=beta),
        _classes(to_onehot_y, include_background),
        softmax=_use_softmax(sigmoid, softmax),
        batch=batch,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
    )


def generalized_dice(
    *,
    sigmoid: bool = False,
    softmax: bool = False,
    to_onehot_y: bool = False,
    include_background: bool = True,
    w_type: Literal["square", "simple", "uniform"] = "square",
    batch: bool = False,
    smooth_nr: NonNegativeFloat = 1e-5,
    smooth_dr: NonNegativeFloat = 1e-5,
) -> Any:
    """Generalized Dice loss: classes weighted by 1/volume² (w_type square), as MONAI's."""
    from bioim2im.builtins._losses import generalized_dice_score

    return _overlap(
        functools.partial(generalized_dice_score, w_type=w_type),
        _classes(to_onehot_y, include_background),
        softmax=_use_softmax(sigmoid, softmax),
        batch=batch,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
    )


def focal(
    *,
    sigmoid: bool = False,
    softmax: bool = False,
    to_onehot_y: bool = False,
    include_background: bool = True,
    gamma: NonNegativeFloat = 2.0,
    alpha: NonNegativeFloat | list[NonNegativeFloat] | None = None,
    class_weights: ClassWeights = None,
) -> Any:
    """Focal loss: cross-entropy down-weighting well-classified pixels by (1 - p)^gamma."""
    from bioim2im.builtins._losses import FocalLoss

    return FocalLoss(
        _classes(to_onehot_y, include_background, class_weights),
        softmax=_use_softmax(sigmoid, softmax),
        gamma=gamma,
        alpha=alpha,
    )


def dice_ce(
    *,
    sigmoid: bool = False,
    softmax: bool = False,
    to_onehot_y: bool = False,
    include_background: bool = True,
    class_weights: ClassWeights = None,
    batch: bool = False,
    smooth_nr: NonNegativeFloat = 1e-5,
    smooth_dr: NonNegativeFloat = 1e-5,
    lambda_dice: NonNegativeFloat = 1.0,
    lambda_ce: NonNegativeFloat = 1.0,
    label_smoothing: Smoothing = 0.0,
) -> Any:
    """Dice + cross-entropy (binary cross-entropy with sigmoid); include_background: Dice only."""
    from bioim2im.builtins._losses import (
        BinaryCrossEntropy,
        CrossEntropy,
        SoftmaxDiceCrossEntropy,
        SumOfLosses,
    )

    use_softmax = _use_softmax(sigmoid, softmax)
    dice_loss = dice(
        sigmoid=sigmoid,
        softmax=softmax,
        to_onehot_y=to_onehot_y,
        include_background=include_background,
        class_weights=class_weights,
        batch=batch,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
    )
    all_classes = _classes(to_onehot_y, class_weights=class_weights)
    if use_softmax and not label_smoothing:
        return SoftmaxDiceCrossEntropy(dice_loss, all_classes, lambda_dice, lambda_ce)
    ce_loss = (
        CrossEntropy(all_classes, label_smoothing=label_smoothing)
        if use_softmax
        else BinaryCrossEntropy(all_classes)
    )
    return SumOfLosses([(lambda_dice, dice_loss), (lambda_ce, ce_loss)])


def dice_focal(
    *,
    sigmoid: bool = False,
    softmax: bool = False,
    to_onehot_y: bool = False,
    include_background: bool = True,
    class_weights: ClassWeights = None,
    batch: bool = False,
    smooth_nr: NonNegativeFloat = 1e-5,
    smooth_dr: NonNegativeFloat = 1e-5,
    gamma: NonNegativeFloat = 2.0,
    alpha: NonNegativeFloat | list[NonNegativeFloat] | None = None,
    lambda_dice: NonNegativeFloat = 1.0,
    lambda_focal: NonNegativeFloat = 1.0,
) -> Any:
    """Dice + focal loss, both on the chosen activation (MONAI's focal term is always sigmoid)."""
    from bioim2im.builtins._losses import SumOfLosses

    targets: dict[str, Any] = dict(
        sigmoid=sigmoid,
        softmax=softmax,
        to_onehot_y=to_onehot_y,
        include_background=include_background,
        class_weights=class_weights,
    )
    dice_loss = dice(**targets, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr)
    focal_loss = focal(**targets, gamma=gamma, alpha=alpha)
    return SumOfLosses([(lambda_dice, dice_loss), (lambda_focal, focal_loss)])


def bce(*, pos_weight: PositiveFloat | list[PositiveFloat] | None = None) -> Any:
    """Binary cross-entropy on logits per channel; targets in {0, 1} shaped like the prediction."""
    from bioim2im.builtins._losses import BinaryCrossEntropy

    return BinaryCrossEntropy(_classes(to_onehot_y=False), pos_weight=pos_weight)


def ce(*, class_weights: ClassWeights = None, label_smoothing: Smoothing = 0.0) -> Any:
    """Softmax cross-entropy; the target holds class indices (B, 1, *spatial)."""
    from bioim2im.builtins._losses import CrossEntropy

    return CrossEntropy(
        _classes(to_onehot_y=True, class_weights=class_weights), label_smoothing=label_smoothing
    )


def mse() -> Any:
    """Mean squared error."""
    from bioim2im.builtins import _losses

    return _losses.ElementwiseLoss(_losses.mse)


def l1() -> Any:
    """Mean absolute error."""
    from bioim2im.builtins import _losses

    return _losses.ElementwiseLoss(_losses.l1)


def smooth_l1(*, beta: PositiveFloat = 1.0) -> Any:
    """Huber-like loss: squared below beta, absolute above."""
    from bioim2im.builtins import _losses

    return _losses.ElementwiseLoss(functools.partial(_losses.smooth_l1, beta=beta))


def ssim(
    *,
    data_range: PositiveFloat = 1.0,
    win_size: Annotated[int, Field(ge=3)] = 11,
    kernel_sigma: PositiveFloat = 1.5,
) -> Any:
    """1 - structural similarity (Gaussian window), for restoration and label-free prediction."""
    from bioim2im.builtins._losses import SSIMLoss

    return SSIMLoss(data_range=data_range, win_size=win_size, kernel_sigma=kernel_sigma)


# What each parameter means, for the Args: section every loss's docstring gets (see
# bioim2im list-plugins --kind loss --params); per-loss meanings in _MEANINGS.
_PARAMETERS = {
    "sigmoid": "Independent channels: a sigmoid per channel, targets in {0, 1} (masks that may "
    "overlap). Set this or softmax.",
    "softmax": "Exclusive classes: a softmax over the channels, one class per pixel. Set this or "
    "sigmoid.",
    "to_onehot_y": "The target holds class indices (B, 1, *spatial), turned into one channel per "
    "class; otherwise it has one channel per class already.",
    "include_background": "Score channel 0 too; false leaves the background class out of the "
    "overlap term.",
    "class_weights": "One weight per channel (background included), e.g. to favour rare classes; "
    "none weighs them alike.",
    "batch": "Sum the overlap over the whole batch before the ratio, instead of per sample (steadier "
    "for classes absent from some patches).",
    "jaccard": "Score the Jaccard index (IoU) instead of Dice.",
    "smooth_nr": "Added to the numerator of the overlap ratio (an empty prediction of an empty "
    "target scores 1).",
    "smooth_dr": "Added to the denominator of the overlap ratio (no division by zero).",
    "lambda_dice": "Weight of the Dice term.",
    "lambda_ce": "Weight of the cross-entropy term.",
    "lambda_focal": "Weight of the focal term.",
    "label_smoothing": "Share of each one-hot target spread evenly over the classes (softmax only).",
    "gamma": "Focusing exponent: pixels predicted right with probability p weigh (1 - p)^gamma.",
    "alpha": "Balance of the classes: with sigmoid, the weight of positives (negatives weigh "
    "1 - alpha); with softmax, one weight per class; none when unset.",
    "pos_weight": "Weight of the positive pixels (one value, or one per channel), e.g. "
    "background/foreground pixel ratio for sparse masks; none weighs them like the negatives.",
    "w_type": 'Class weights of the generalized Dice: "square" (1 / volume²), "simple" '
    '(1 / volume) or "uniform".',
    "beta": "Below this difference the loss is squared, above it absolute.",
    "data_range": "The range of the values compared (1.0 for targets in [0, 1]).",
    "win_size": "Side of the Gaussian window, odd.",
    "kernel_sigma": "Standard deviation of the Gaussian window, in pixels.",
}
_MEANINGS = {
    ("tversky", "alpha"): "Weight of the false positives.",
    ("tversky", "beta"): "Weight of the false negatives (above alpha favours recall).",
}


def _document(factory: Callable[..., Any]) -> None:
    """Add the Args: section of ``factory``'s parameters to its docstring."""
    import inspect

    names = [n for n in inspect.signature(factory).parameters if n in _PARAMETERS]
    lines = [
        f"    {name}: {_MEANINGS.get((factory.__name__, name), _PARAMETERS[name])}"
        for name in names
    ]
    if lines:
        factory.__doc__ = f"{factory.__doc__}\n\nArgs:\n" + "\n".join(lines)


@hookimpl
def bioim2im_register_losses(registry: Registrar) -> None:
    # Losses on logits that need an activation chosen: sigmoid or softmax.
    activated: tuple[Callable[..., Any], ...] = (
        dice, dice_ce, dice_focal, focal, tversky, generalized_dice
    )  # fmt: skip
    plain: tuple[Callable[..., Any], ...] = (bce, ce, mse, l1, smooth_l1)
    for factory in (*activated, *plain, ssim):
        if "Args:" not in (factory.__doc__ or ""):
            _document(factory)
    for factory in activated:
        registry.add(factory.__name__, factory, check=_check_activation)
    for factory in plain:
        registry.add(factory.__name__, factory)
    registry.add("ssim", ssim, check=_check_ssim)
