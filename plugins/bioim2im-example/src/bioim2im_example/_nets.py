"""The heavy part of the example plugin, imported only when a component is built."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Sequential):
    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, width: int, depth: int
    ) -> None:
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth - 1):
            layers += [conv(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        layers.append(conv(channels, out_channels, 3, padding=1))
        super().__init__(*layers)


class CharbonnierLoss(nn.Module):
    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        loss = torch.sqrt((prediction - target) ** 2 + self.eps**2)
        if weight is None:
            return loss.mean()
        weight = weight.expand_as(loss)
        return (loss * weight).sum() / weight.sum().clamp_min(1e-8)
