"""Torch modules behind ``bioim2im.builtins.discriminators``."""

from __future__ import annotations

import itertools
from typing import Literal

from torch import nn

_CONV: dict[int, type[nn.Conv2d | nn.Conv3d]] = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM: dict[str, dict[int, type[nn.Module]]] = {
    # pix2pix's instance norm keeps no running statistics and learns no scale and shift.
    "instance": {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
}


class PatchGAN(nn.Sequential):
    """The pix2pix discriminator (``NLayerDiscriminator`` of Isola et al. 2017), 2D or 3D.

    ``layers`` stride-2 convolutions (4 wide) double the channels up to 8 x ``channels``; two
    stride-1 convolutions follow, the last giving one logit per receptive field (70 pixels wide
    for 3 layers, 34 for 2, 142 for 4).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        *,
        channels: int = 64,
        layers: int = 3,
        norm: Literal["instance", "batch", "none"] = "instance",
    ) -> None:
        conv = _CONV[spatial_dims]
        # A convolution followed by a norm needs no bias: the norm subtracts the mean.
        bias = norm == "none"

        def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            found: list[nn.Module] = [conv(c_in, c_out, 4, stride, 1, bias=bias)]
            if norm != "none":
                found.append(_NORM[norm][spatial_dims](c_out))
            return [*found, nn.LeakyReLU(0.2, inplace=True)]

        widths = list(itertools.pairwise(channels * min(2**i, 8) for i in range(layers + 1)))
        modules: list[nn.Module] = [conv(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in widths[:-1]:
            modules += block(c_in, c_out, stride=2)
        modules += block(*widths[-1], stride=1)
        modules.append(conv(widths[-1][1], 1, 4, 1, 1))
        super().__init__(*modules)
        self.apply(_pix2pix_init)


def _pix2pix_init(module: nn.Module) -> None:
    """Weights from N(0, 0.02), norms' scales from N(1, 0.02), biases 0: pix2pix's init."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
