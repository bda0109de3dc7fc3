"""Torch modules behind ``bioim2im.builtins.heads``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn

# Our names for MONAI's UpSample modes.
_UPSAMPLE_MODES = {
    "deconv": "deconv",
    "pixelshuffle": "pixelshuffle",
    "interpolate": "nontrainable",
}


def conv_head(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int,
    hidden_channels: int | None,
    upsample: int | Sequence[int],
    upsample_mode: Literal["deconv", "pixelshuffle", "interpolate"],
) -> nn.Sequential:
    """[upsample] -> [conv + ReLU to hidden_channels] -> conv to out_channels, no final activation.

    ``upsample`` is one factor for every axis or one per axis (pixelshuffle: the same on all).
    """
    layers: list[nn.Module] = []
    factors = [upsample] * spatial_dims if isinstance(upsample, int) else list(upsample)
    if any(f > 1 for f in factors):
        layers.append(
            UpSample(
                spatial_dims,
                in_channels,
                in_channels,
                # pixelshuffle takes a single factor (checked to be the same on every axis)
                scale_factor=factors[0] if upsample_mode == "pixelshuffle" else factors,
                mode=_UPSAMPLE_MODES[upsample_mode],
            )
        )
    channels = in_channels
    if hidden_channels is not None:
        layers.append(
            Convolution(
                spatial_dims, channels, hidden_channels, kernel_size=kernel_size, act="relu"
            )
        )
        channels = hidden_channels
    layers.append(
        Convolution(spatial_dims, channels, out_channels, kernel_size=kernel_size, conv_only=True)
    )
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """(B, C, Z, Y, X) features -> (B, out_channels, Y, X): pool over Z, then a 1x1 convolution.

    ``learned`` pools with per-pixel softmax weights over Z, scored by a 1x1x1 convolution, so the
    network can pick the in-focus plane of each pixel.
    """

    def __init__(
        self, in_channels: int, out_channels: int, mode: Literal["max", "mean", "learned"]
    ) -> None:
        super().__init__()
        self.mode = mode
        self.score = nn.Conv3d(in_channels, 1, kernel_size=1) if mode == "learned" else None
        self.project = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.score is not None:
            weights = self.score(features).softmax(dim=2)
            pooled = (features * weights).sum(dim=2)
        elif self.mode == "max":
            pooled = features.amax(dim=2)
        else:
            pooled = features.mean(dim=2)
        return self.project(pooled)
