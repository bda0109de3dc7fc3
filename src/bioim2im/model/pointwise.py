"""1x1 convolutions computed as a matrix product over channels on the CPU.

oneDNN's CPU path for a 1x1(x1) convolution with few channels is far slower than the same
product written as an einsum: a 2 -> 2 channel 1x1x1 convolution over a batch of two
32 x 128 x 128 patches took 187 ms forward and backward against 10 ms (torch 2.13, 2 cores),
a third of a 3D U-Net's training step. :func:`bioim2im.model.network.build_model` swaps every
head's 1x1 convolution for these classes, which keep the convolution's parameters (the same
state-dict keys and shapes, so checkpoints and exports are unchanged) and compute it
differently on the CPU only; on a GPU, cuDNN's convolution runs as before.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


class _Pointwise:
    weight: torch.Tensor
    bias: torch.Tensor | None
    groups: int

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.device.type != "cpu" or self.groups != 1:
            return super().forward(input)  # type: ignore[misc]
        output = torch.einsum("oc,bc...->bo...", self.weight.flatten(1), input)
        if self.bias is not None:
            output = output + self.bias.view(1, -1, *[1] * (input.ndim - 2))
        return output


class PointwiseConv2d(_Pointwise, nn.Conv2d):
    """A 1x1 ``nn.Conv2d``, an einsum on the CPU."""


class PointwiseConv3d(_Pointwise, nn.Conv3d):
    """A 1x1x1 ``nn.Conv3d``, an einsum on the CPU."""


def pointwise_conv(
    spatial_dims: int, in_channels: int, out_channels: int, bias: bool = True
) -> nn.Module:
    """A 1x1(x1) convolution of ``spatial_dims`` (2 or 3)."""
    kind = PointwiseConv3d if spatial_dims == 3 else PointwiseConv2d
    return kind(in_channels, out_channels, kernel_size=1, bias=bias)


def make_pointwise(block: M) -> M:
    """``block`` with every 1x1(x1), ungrouped, unstrided convolution inside it replaced by its
    pointwise twin holding the same parameters."""
    for name, child in list(block.named_children()):
        if isinstance(child, nn.Conv2d | nn.Conv3d) and _is_pointwise(child):
            dims = child.weight.ndim - 2
            twin = pointwise_conv(
                dims, child.in_channels, child.out_channels, bias=child.bias is not None
            )
            twin.load_state_dict(child.state_dict())
            setattr(block, name, twin)
        else:
            make_pointwise(child)
    return block


def _is_pointwise(conv: nn.Conv2d | nn.Conv3d) -> bool:
    one = (1,) * (conv.weight.ndim - 2)
    return (
        type(conv) in (nn.Conv2d, nn.Conv3d)
        and tuple(conv.kernel_size) == one
        and tuple(conv.stride) == one
        and tuple(conv.dilation) == one
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and all(p == 0 for p in conv.padding)
    )
