"""An example bioim2im plugin: one backbone, one loss, one preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioim2im.plugin.hookspecs import hookimpl


def tiny_cnn(
    *, spatial_dims: int, in_channels: int, out_channels: int, width: int = 16, depth: int = 3
) -> Any:
    """A plain stack of 3x3 convolutions with ReLU (no down-sampling)."""
    from bioim2im_example._nets import TinyCNN

    return TinyCNN(spatial_dims, in_channels, out_channels, width, depth)


def charbonnier(*, eps: float = 1e-3) -> Any:
    """Charbonnier loss sqrt((x - y)^2 + eps^2), a smooth robust L1."""
    from bioim2im_example._nets import CharbonnierLoss

    return CharbonnierLoss(eps)


@hookimpl
def bioim2im_register_backbones(registry: Any) -> None:
    registry.add("tiny_cnn", tiny_cnn, divisor=lambda params: 1)


@hookimpl
def bioim2im_register_losses(registry: Any) -> None:
    registry.add("charbonnier", charbonnier)


@hookimpl
def bioim2im_register_presets(registry: Any) -> None:
    registry.add(
        "example-denoise-2d",
        Path(__file__).parent / "presets" / "example-denoise-2d.toml",
        "Restoration with the example plugin's tiny_cnn and charbonnier loss",
    )
