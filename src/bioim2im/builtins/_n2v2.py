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
from typing import Any

# The module lives in the file packages carry as their architecture (torch and MONAI only).
from bioim2im.builtins._standalone_network import (
    ConvBlock,
    Downsample,
    N2V2UNet,
    Upsample,
)

__all__ = ["ConvBlock", "Downsample", "N2V2UNet", "Upsample", "per_axis", "total"]


def per_axis(strides: Sequence[Any], spatial_dims: int) -> list[tuple[int, ...]]:
    """Each level's stride as one number per axis."""
    return [(s,) * spatial_dims if isinstance(s, int) else tuple(s) for s in strides]


def total(strides: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    return tuple(math.prod(axis) for axis in zip(*strides, strict=True))
