"""Built-in heads: map the backbone's features to one task's output (logits or values)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import PositiveInt

from bioim2im.errors import UserError
from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar


def identity() -> Any:
    """The backbone's features unchanged: the output has the backbone's out_channels."""
    from torch import nn

    return nn.Identity()


def conv(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Literal[1, 3] = 1,
    hidden_channels: PositiveInt | None = None,
    upsample: PositiveInt | list[PositiveInt] = 1,
    upsample_mode: Literal["deconv", "pixelshuffle", "interpolate"] = "deconv",
) -> Any:
    """Convolution to out_channels, optionally after a hidden layer and an upsampling by `upsample` (one factor, or one per (Z)YX axis).

    Args:
        kernel_size: Size of its convolutions: 1 (each voxel on its own) or 3 (with its
            neighbours).
        hidden_channels: Channels of a hidden convolution (with ReLU) before the output one;
            none when unset.
        upsample: Output voxels per input voxel: one factor for every axis, or one per (Z)YX
            axis (super-resolution); targets are expected at that resolution.
        upsample_mode: How it upsamples, before its convolutions: "deconv" (transposed
            convolution), "pixelshuffle" (sub-pixel convolution; one factor for every axis)
            or "interpolate" (interpolation, no weights).
    """
    from bioim2im.builtins._heads import conv_head

    return conv_head(
        spatial_dims,
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        hidden_channels=hidden_channels,
        upsample=upsample,
        upsample_mode=upsample_mode,
    )


def projection(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    mode: Literal["max", "mean", "learned"] = "learned",
) -> Any:
    """3D features to a 2D output: pool over Z (max, mean or learned weights), then a 1x1 conv.

    Args:
        mode: How Z is pooled: "max", "mean" or "learned" (a softmax over Z of learned scores).
    """
    from bioim2im.builtins._heads import ProjectionHead

    if spatial_dims != 3:
        raise UserError(
            f"the projection head needs a 3D backbone, got spatial_dims = {spatial_dims}"
        )
    return ProjectionHead(in_channels, out_channels, mode)


def _check_conv(*, upsample: Any, upsample_mode: str, spatial_dims: int | None, **_: Any) -> None:
    if not isinstance(upsample, list):
        return
    if spatial_dims is not None and len(upsample) != spatial_dims:
        raise ValueError(f"upsample {upsample} needs one factor per spatial axis ({spatial_dims})")
    if upsample_mode == "pixelshuffle" and len(set(upsample)) > 1:
        raise ValueError(
            f"upsample_mode 'pixelshuffle' needs the same factor on every axis, got {upsample}; "
            "use 'deconv' or 'interpolate'"
        )


def _conv_scale(params: Mapping[str, Any]) -> int | tuple[int, ...]:
    upsample = params["upsample"]
    return tuple(upsample) if isinstance(upsample, list) else int(upsample)


@hookimpl
def bioim2im_register_heads(registry: Registrar) -> None:
    registry.add("identity", identity)
    registry.add("conv", conv, scale=_conv_scale, check=_check_conv)
    registry.add("projection", projection, output_spatial_dims=2, spatial_dims=(3,))
