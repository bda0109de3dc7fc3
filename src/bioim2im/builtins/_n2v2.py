"""The U-Net of N2V2 (Höck et al., 2022) behind the ``n2v2_unet`` backbone.

Noise2Void trained on a plain U-Net leaves a checkerboard or grid texture in its outputs: the
blind spot makes the network predict each pixel from its neighbours only, and whatever the
architecture passes on at a fixed period (max-pooling's choice of one pixel in each 2x2 cell,
the full-resolution skip connection handing the high frequencies of the input straight to the
output, transposed convolutions' uneven overlap) is all it can copy. N2V2's answer, kept here:

- downsampling by max-blur-pooling (a max over each 2x2 neighbourhood at stride 1, then a
  binomial blur before taking every second pixel; Zhang, 2019), or by average pooling;
- no skip connection at the top (full-resolution) level;
- upsampling by interpolation followed by a convolution, never a transposed convolution.

Each axis has its own stride (1 keeps a coarse Z at a level), like the ``unet`` backbone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional


def _norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d)(channels)
    if kind == "instance":
        layer = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        return layer(channels, affine=True)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two 3x3(x3) convolutions, each followed by a normalisation and a ReLU."""

    def __init__(self, spatial_dims: int, channels_in: int, channels_out: int, norm: str) -> None:
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        super().__init__(
            conv(channels_in, channels_out, 3, padding=1, bias=norm == "none"),
            _norm(norm, spatial_dims, channels_out),
            nn.ReLU(inplace=True),
            conv(channels_out, channels_out, 3, padding=1, bias=norm == "none"),
            _norm(norm, spatial_dims, channels_out),
            nn.ReLU(inplace=True),
        )


class Downsample(nn.Module):
    """Downsampling by ``stride`` per axis: ``maxblur`` (max over 2 at stride 1, binomial blur,
    subsample), ``avg`` (average pooling) or ``max`` (plain max pooling)."""

    def __init__(self, spatial_dims: int, channels: int, stride: Sequence[int], mode: str) -> None:
        super().__init__()
        self.spatial_dims, self.stride, self.mode = spatial_dims, tuple(stride), mode
        self.channels = channels
        # The separable [1, 2, 1] / 4 blur along each strided axis, identity along the others,
        # one copy per channel (a fixed, exportable depthwise convolution).
        kernel = torch.ones((1,) * spatial_dims)
        for axis, s in enumerate(self.stride):
            if s > 1:
                shape = [1] * spatial_dims
                shape[axis] = 3
                kernel = kernel * (torch.tensor([1.0, 2.0, 1.0]) / 4).reshape(shape)
        weight = kernel[None, None].repeat(channels, *[1] * (spatial_dims + 1))
        self.register_buffer("kernel", weight.contiguous(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if all(s == 1 for s in self.stride):
            return x
        pool = functional.max_pool3d if self.spatial_dims == 3 else functional.max_pool2d
        if self.mode == "max":
            return pool(x, self.stride, self.stride)
        if self.mode == "avg":
            average = functional.avg_pool3d if self.spatial_dims == 3 else functional.avg_pool2d
            return average(x, self.stride, self.stride)
        # Max over each 2-neighbourhood along the strided axes, at stride 1 (padded at the end).
        window = tuple(2 if s > 1 else 1 for s in self.stride)
        pad = [p for w in reversed(window) for p in (0, w - 1)]
        x = pool(functional.pad(x, pad, mode="replicate"), window, 1)
        # Then blur and take every stride-th voxel.
        reach = [p for s in reversed(self.stride) for p in ((1, 1) if s > 1 else (0, 0))]
        x = functional.pad(x, reach, mode="reflect")
        weight = cast(Tensor, self.kernel).to(x.dtype)
        conv = functional.conv3d if self.spatial_dims == 3 else functional.conv2d
        return conv(x, weight, stride=self.stride, groups=self.channels)


class Upsample(nn.Module):
    """Interpolation by ``stride`` per axis, then a 3x3(x3) convolution."""

    def __init__(
        self, spatial_dims: int, channels_in: int, channels_out: int, stride: Sequence[int]
    ) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.stride = tuple(float(s) for s in stride)
        self.mode = "trilinear" if spatial_dims == 3 else "bilinear"
        self.conv = conv(channels_in, channels_out, 3, padding=1)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        x = functional.interpolate(x, size=tuple(size), mode=self.mode, align_corners=False)
        return self.conv(x)


class N2V2UNet(nn.Module):
    """Encoder levels of ``channels``, downsampled by ``strides`` between them; the decoder
    mirrors them, with skip connections at every level but (unless ``top_skip``) the first."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[Sequence[int]],
        pool: str,
        top_skip: bool,
        norm: str,
    ) -> None:
        super().__init__()
        self.top_skip = top_skip
        levels = len(channels)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        previous = in_channels
        for level, width in enumerate(channels):
            self.encoders.append(ConvBlock(spatial_dims, previous, width, norm))
            if level < levels - 1:
                self.downs.append(Downsample(spatial_dims, width, strides[level], pool))
            previous = width
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(levels - 1)):
            width = channels[level]
            self.ups.append(Upsample(spatial_dims, channels[level + 1], width, strides[level]))
            skip = level > 0 or top_skip
            self.decoders.append(ConvBlock(spatial_dims, width * (2 if skip else 1), width, norm))
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.output = conv(channels[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < len(self.downs):
                skips.append(x)
                x = self.downs[level](x)
        for up, decoder in zip(self.ups, self.decoders, strict=True):
            skip = skips.pop()
            x = up(x, skip.shape[2:])
            if skips or self.top_skip:  # skips is empty at the top level
                x = torch.cat([x, skip], dim=1)
            x = decoder(x)
        return self.output(x)


def per_axis(strides: Sequence[Any], spatial_dims: int) -> list[tuple[int, ...]]:
    """Each level's stride as one number per axis."""
    return [(s,) * spatial_dims if isinstance(s, int) else tuple(s) for s in strides]


def total(strides: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    return tuple(math.prod(axis) for axis in zip(*strides, strict=True))
