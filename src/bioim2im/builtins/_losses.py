"""Torch modules behind ``bioim2im.builtins.losses``.

Every loss is called as ``loss(prediction, target, weight=None)`` and returns a scalar.
``prediction`` holds logits (or values, for regression) shaped (B, C, *spatial). ``weight`` is a
cost map >= 0 shaped (B, 1, *spatial), or (B, C, *spatial) to weigh each channel (class) on its
own, or anything else that broadcasts to the prediction. Each pixel's
terms are multiplied by its weight, so a pixel of weight 0 neither counts nor gets a gradient, and
its target is replaced by 0 first so that NaNs or ignore labels stored there are harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.losses.focal_loss import sigmoid_focal_loss, softmax_focal_loss
from monai.networks.layers import separable_filtering
from monai.networks.utils import one_hot
from torch import Tensor, nn


def masked_mean(loss: Tensor, weight: Tensor | None) -> Tensor:
    """Weighted mean of a loss map over all its elements (plain mean without weights); 0 when
    every weight is 0."""
    if weight is None:
        return loss.mean()
    total = weight.expand_as(loss).sum()
    return (loss * weight).sum() / total.clamp_min(torch.finfo(loss.dtype).eps)


class WeightedLoss(nn.Module):
    """Clears targets under zero weight, then calls ``weighted``.

    Without a cost map (``weight`` None) every pixel counts once, and ``weighted`` takes the
    shorter way: no map of ones multiplies every term, forward and backward.
    """

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        target = target.to(prediction.dtype)
        if weight is not None:
            weight = weight.to(prediction.dtype)
            target = torch.where(weight > 0, target, torch.zeros_like(target))
        return self.weighted(prediction, target, weight)

    def weighted(self, prediction: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        raise NotImplementedError


class ElementwiseLoss(WeightedLoss):
    """Weighted mean of ``elementwise(prediction, target)``, a per-element loss map."""

    def __init__(self, elementwise: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.elementwise = elementwise

    def weighted(self, prediction: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        return masked_mean(self.elementwise(prediction, target), weight)


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(prediction, target, reduction="none")


def l1(prediction: Tensor, target: Tensor) -> Tensor:
    return F.l1_loss(prediction, target, reduction="none")


def smooth_l1(prediction: Tensor, target: Tensor, *, beta: float) -> Tensor:
    return F.smooth_l1_loss(prediction, target, reduction="none", beta=beta)


def _per_channel(values: float | Sequence[float], like: Tensor) -> Tensor:
    """``values`` shaped (1, C, 1, ...) to scale a (B, C, ...) map; a single value, (1, 1, ...)."""
    shape = (1, -1) + (1,) * (like.ndim - 2)
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(shape)


@dataclass(frozen=True)
class Classes:
    """How class targets are given and which channels count.

    With ``to_onehot_y`` the target holds class indices (B, 1, *spatial), otherwise it is already
    one-hot (or binary per channel) like the prediction. ``class_weights`` has one entry per
    channel; when ``include_background`` is false, channel 0 and its weight are dropped from the
    terms that honour it.
    """

    to_onehot_y: bool = False
    include_background: bool = True
    class_weights: tuple[float, ...] | None = None

    def onehot_targets(self, target: Tensor, logits: Tensor) -> Tensor:
        """The target as (B, C, *spatial) one-hot, checked against the logits."""
        channels = logits.shape[1]
        if self.to_onehot_y:
            target = one_hot(target, num_classes=channels, dtype=logits.dtype, dim=1)
        self._check(target, logits, fits=target.shape == logits.shape)
        return target

    def index_targets(self, target: Tensor, logits: Tensor) -> Tensor:
        """The class indices (B, *spatial) of a ``to_onehot_y`` target, checked alike (cheaper
        than one-hot for a cross-entropy)."""
        fits = target.shape[:1] + target.shape[2:] == logits.shape[:1] + logits.shape[2:]
        self._check(target, logits, fits=fits and target.shape[1] == 1)
        return target[:, 0].long()

    def _check(self, target: Tensor, logits: Tensor, *, fits: bool) -> None:
        channels = logits.shape[1]
        if not fits:
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match the prediction's "
                f"{tuple(logits.shape)}; with to_onehot_y the target holds class indices (B, 1, ...)"
            )
        if self.class_weights is not None and len(self.class_weights) != channels:
            raise ValueError(
                f"class_weights has {len(self.class_weights)} entries for {channels} channels"
            )
        if not self.include_background and channels == 1:
            raise ValueError("include_background = false needs more than one channel")

    def foreground(self, values: Tensor) -> Tensor:
        """Drop the background channel of a (B, C, ...) map unless it is included."""
        return values if self.include_background else values[:, 1:]

    def channel_weight(self, weight: Tensor | None) -> Tensor | None:
        """A per-class weight map with the channels :meth:`foreground` keeps; (B, 1, ...) as is."""
        return weight if weight is None or weight.shape[1] == 1 else self.foreground(weight)

    def weigh(self, loss: Tensor) -> Tensor:
        """Scale a per-channel map (B, C, ...) by the class weights, background dropped if so."""
        if self.class_weights is None:
            return loss
        return loss * self.foreground(_per_channel(self.class_weights, loss))


class ClassLoss(WeightedLoss):
    """A loss on class logits (B, C, *spatial) against one-hot targets of the same shape."""

    def __init__(self, classes: Classes) -> None:
        super().__init__()
        self.classes = classes

    def weighted(self, logits: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        return self.class_loss(logits, self.classes.onehot_targets(target, logits), weight)

    def class_loss(self, logits: Tensor, onehot: Tensor, weight: Tensor | None) -> Tensor:
        raise NotImplementedError


def dice_score(tp: Tensor, fp: Tensor, fn: Tensor, smooth_nr: float, smooth_dr: float) -> Tensor:
    return (2 * tp + smooth_nr) / (2 * tp + fp + fn + smooth_dr)


def jaccard_score(tp: Tensor, fp: Tensor, fn: Tensor, smooth_nr: float, smooth_dr: float) -> Tensor:
    # MONAI's Jaccard form, smoothing included, so results match monai.losses.DiceLoss.
    return (2 * tp + smooth_nr) / (2 * (tp + fp + fn) + smooth_dr)


def tversky_score(
    tp: Tensor,
    fp: Tensor,
    fn: Tensor,
    smooth_nr: float,
    smooth_dr: float,
    *,
    alpha: float,
    beta: float,
) -> Tensor:
    return (tp + smooth_nr) / (tp + alpha * fp + beta * fn + smooth_dr)


_CLASS_BALANCE: dict[str, Callable[[Tensor], Tensor]] = {
    "square": lambda volume: 1 / volume**2,
    "simple": lambda volume: 1 / volume,
    "uniform": torch.ones_like,
}


def generalized_dice_score(
    tp: Tensor, fp: Tensor, fn: Tensor, smooth_nr: float, smooth_dr: float, *, w_type: str
) -> Tensor:
    """One score over all classes, each weighted by a function of its target volume (B, 1)."""
    # The target volumes are constants: detached, so an absent class's infinite weight
    # cannot turn the gradient into NaN.
    balance = _CLASS_BALANCE[w_type]((tp + fn).detach())
    # As MONAI: a class absent from the target gets the largest weight of the present ones.
    absent = torch.isinf(balance)
    balance = balance.masked_fill(absent, 0)
    balance = balance + absent * balance.amax(dim=1, keepdim=True)
    numerator = 2 * (balance * tp).sum(dim=1, keepdim=True) + smooth_nr
    denominator = (balance * (2 * tp + fp + fn)).sum(dim=1, keepdim=True) + smooth_dr
    return numerator / denominator


Score = Callable[[Tensor, Tensor, Tensor, float, float], Tensor]


class OverlapLoss(ClassLoss):
    """1 - an overlap score (Dice, Jaccard, Tversky...) of probabilities and one-hot targets.

    True and false positives and false negatives are sums of ``weight * p * t`` etc., the way
    nnU-Net masks its Dice, so each pixel counts by its cost. Sums run over space, and over the
    batch too when ``batch``; the loss is the mean over samples and classes.
    """

    def __init__(
        self,
        score: Score,
        classes: Classes,
        *,
        softmax: bool,
        batch: bool,
        smooth_nr: float,
        smooth_dr: float,
    ) -> None:
        super().__init__(classes)
        self.score = score
        self.softmax = softmax
        self.batch = batch
        self.smooth_nr = smooth_nr
        self.smooth_dr = smooth_dr

    def class_loss(self, logits: Tensor, onehot: Tensor, weight: Tensor | None) -> Tensor:
        probs = logits.softmax(dim=1) if self.softmax else logits.sigmoid()
        return self.probability_loss(probs, onehot, weight)

    def probability_loss(self, probs: Tensor, onehot: Tensor, weight: Tensor | None) -> Tensor:
        """The loss of probabilities already computed from the logits."""
        probs, onehot = self.classes.foreground(probs), self.classes.foreground(onehot)
        weight = self.classes.channel_weight(weight)
        spatial = list(range(2, probs.ndim))
        # fp = sum(w p (1 - t)) = sum(w p) - tp and fn = sum(w t) - tp: three full-size products
        # fewer, forward and backward.
        weighted = probs if weight is None else weight * probs
        tp = (weighted * onehot).sum(spatial)
        fp = weighted.sum(spatial) - tp
        fn = (onehot if weight is None else weight * onehot).sum(spatial) - tp
        if self.batch:
            tp, fp, fn = (t.sum(0, keepdim=True) for t in (tp, fp, fn))
        loss = 1 - self.score(tp, fp, fn, self.smooth_nr, self.smooth_dr)
        return self.classes.weigh(loss).mean()


class FocalLoss(ClassLoss):
    """Focal loss (MONAI's sigmoid or softmax form), weighted mean over pixels and classes."""

    def __init__(
        self,
        classes: Classes,
        *,
        softmax: bool,
        gamma: float,
        alpha: float | Sequence[float] | None,
    ) -> None:
        super().__init__(classes)
        self.softmax = softmax
        self.gamma = gamma
        self.alpha = alpha

    def class_loss(self, logits: Tensor, onehot: Tensor, weight: Tensor | None) -> Tensor:
        alpha = None if self.alpha is None else torch.as_tensor(self.alpha, device=logits.device)
        focal = softmax_focal_loss if self.softmax else sigmoid_focal_loss
        loss = focal(logits, onehot, self.gamma, alpha)
        return masked_mean(
            self.classes.weigh(self.classes.foreground(loss)), self.classes.channel_weight(weight)
        )


class BinaryCrossEntropy(ClassLoss):
    """Per-channel binary cross-entropy on logits; ``pos_weight`` scales the positive terms."""

    def __init__(
        self, classes: Classes, *, pos_weight: float | Sequence[float] | None = None
    ) -> None:
        super().__init__(classes)
        self.pos_weight = pos_weight

    def class_loss(self, logits: Tensor, onehot: Tensor, weight: Tensor | None) -> Tensor:
        pos_weight = None if self.pos_weight is None else _per_channel(self.pos_weight, logits)
        loss = F.binary_cross_entropy_with_logits(
            logits, onehot, pos_weight=pos_weight, reduction="none"
        )
        return masked_mean(self.classes.weigh(loss), weight)


class CrossEntropy(ClassLoss):
    """Softmax cross-entropy over all channels; class weights scale each pixel's term."""

    def __init__(self, classes: Classes, *, label_smoothing: float = 0.0) -> None:
        super().__init__(classes)
        self.label_smoothing = label_smoothing

    def weighted(self, logits: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        if self.classes.to_onehot_y:
            # Class indices as they come: the same loss as against their one-hot form, cheaper.
            return self.class_loss(logits, self.classes.index_targets(target, logits), weight)
        return super().weighted(logits, target, weight)

    def class_loss(self, logits: Tensor, onehot: Tensor, weight: Tensor | None) -> Tensor:
        class_weights = self.classes.class_weights
        loss = F.cross_entropy(
            logits,
            onehot,
            weight=None if class_weights is None else logits.new_tensor(class_weights),
            label_smoothing=self.label_smoothing,
            reduction="none",
        )
        # Softmax classes share each pixel: it counts only where every class is annotated.
        where = None if weight is None else weight.amin(dim=1, keepdim=True)
        return masked_mean(loss.unsqueeze(1), where)


class SoftmaxDiceCrossEntropy(WeightedLoss):
    """Dice + cross-entropy over one softmax: the log-probabilities are computed once, and the
    probabilities the Dice needs are their exponential.

    The same loss as the sum of :class:`OverlapLoss` (softmax) and :class:`CrossEntropy`
    (without label smoothing), for one softmax and its gradient fewer per step: the largest
    share of a Dice + CE loss's time on full-resolution 3D patches.
    """

    def __init__(
        self, dice: OverlapLoss, classes: Classes, lambda_dice: float, lambda_ce: float
    ) -> None:
        super().__init__()
        self.dice = dice
        self.classes = classes  # the cross-entropy's: every class counts
        self.lambda_dice = lambda_dice
        self.lambda_ce = lambda_ce

    def weighted(self, logits: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        classes = self.classes
        log_probs = logits.log_softmax(dim=1)
        onehot = classes.onehot_targets(target, logits)
        dice = self.dice.probability_loss(log_probs.exp(), onehot, weight)
        # -log p of each pixel's class, as a sum over the one-hot channels: on CPU a product
        # and one reduction cost less than nll_loss and its backward.
        terms = log_probs * onehot
        if classes.class_weights is not None:
            terms = terms * _per_channel(classes.class_weights, logits)
        if weight is None:
            cross_entropy = -terms.sum() / (terms.numel() // terms.shape[1])
        else:
            # Softmax classes share each pixel: it counts only where every class is annotated.
            where = weight.amin(dim=1, keepdim=True)
            cross_entropy = masked_mean(-terms.sum(dim=1, keepdim=True), where)
        return self.lambda_dice * dice + self.lambda_ce * cross_entropy


class SumOfLosses(nn.Module):
    """``sum(factor * loss(prediction, target, weight))`` over (factor, loss) terms."""

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.factors = [factor for factor, _ in terms]
        self.losses = nn.ModuleList(loss for _, loss in terms)

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        terms = zip(self.factors, self.losses, strict=True)
        return sum(factor * loss(prediction, target, weight) for factor, loss in terms)


class SSIMLoss(WeightedLoss):
    """1 - SSIM with a Gaussian window, local statistics taken over pixels of nonzero weight.

    The window statistics are normalized convolutions over the valid pixels (weight > 0), so
    zero-weight pixels do not leak into their neighbours' SSIM; the map is then averaged with the
    weights. Borders are handled the same way, so the map covers the whole image.
    """

    def __init__(
        self,
        *,
        data_range: float = 1.0,
        win_size: int = 11,
        kernel_sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
    ) -> None:
        super().__init__()
        self.win_size = win_size
        self.kernel_sigma = kernel_sigma
        self.c1 = (k1 * data_range) ** 2
        self.c2 = (k2 * data_range) ** 2

    def weighted(self, prediction: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        if weight is None:
            weight = torch.ones_like(prediction[:, :1])
        valid = (weight > 0).to(prediction.dtype).expand_as(prediction)
        offsets = torch.arange(self.win_size, dtype=prediction.dtype, device=prediction.device)
        offsets = offsets - self.win_size // 2
        kernel = torch.exp(-(offsets**2) / (2 * self.kernel_sigma**2))
        x, y = prediction * valid, target * valid
        # One filtering pass for all five statistics and the normalization.
        sums = separable_filtering(
            torch.cat([x, y, x * x, y * y, x * y, valid], dim=1), [kernel] * (x.ndim - 2)
        )
        mean_x, mean_y, mean_xx, mean_yy, mean_xy, norm = sums.chunk(6, dim=1)
        norm = norm.clamp_min(torch.finfo(norm.dtype).eps)
        mean_x, mean_y = mean_x / norm, mean_y / norm
        var_x = mean_xx / norm - mean_x**2
        var_y = mean_yy / norm - mean_y**2
        cov = mean_xy / norm - mean_x * mean_y
        ssim = ((2 * mean_x * mean_y + self.c1) * (2 * cov + self.c2)) / (
            (mean_x**2 + mean_y**2 + self.c1) * (var_x + var_y + self.c2)
        )
        return masked_mean(1 - ssim, weight)
