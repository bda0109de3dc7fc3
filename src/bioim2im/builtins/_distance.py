"""The loss behind ``instance_distance``: foreground and per-object distance maps."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bioim2im.builtins._losses import masked_mean


class ForegroundDistanceLoss(nn.Module):
    """(B, 2, *spatial) logits against (foreground, normalised distance) targets.

    Channel 0: ``foreground`` (a loss on foreground logits, e.g. Dice + cross-entropy); channel
    1: binary cross-entropy of the distance logits against the distances in [0, 1] (soft
    targets), times ``distance_weight``. The cost map weighs both.
    """

    def __init__(self, foreground: nn.Module, distance_weight: float) -> None:
        super().__init__()
        self.foreground = foreground
        self.distance_weight = distance_weight

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        if prediction.shape[1] != 2 or target.shape[1] != 2:
            raise ValueError(
                f"instance_distance needs 2 output channels and targets (foreground, distance), "
                f"got {prediction.shape[1]} and {target.shape[1]}"
            )
        # Without a cost map every pixel counts once: both terms skip the products with it.
        if weight is not None:
            weight = weight.to(prediction.dtype)
        foreground = self.foreground(prediction[:, :1], target[:, :1], weight)
        distance = F.binary_cross_entropy_with_logits(
            prediction[:, 1:], target[:, 1:].to(prediction.dtype), reduction="none"
        )
        return foreground + self.distance_weight * masked_mean(distance, weight)
