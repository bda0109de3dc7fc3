"""Built-in discriminators: networks judging whether an image is real or generated."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar


def patchgan(
    *,
    spatial_dims: int,
    in_channels: int,
    channels: Annotated[int, Field(ge=1)] = 64,
    layers: Annotated[int, Field(ge=1)] = 3,
    norm: Literal["instance", "batch", "none"] = "instance",
) -> Any:
    """PatchGAN of pix2pix: one real/fake logit per overlapping patch (70x70 with 3 layers).

    Args:
        channels: Channels of the first convolution; each further layer doubles them (to 8x).
        layers: Strided convolution layers: more layers judge larger patches.
        norm: Normalisation between layers: "instance", "batch" or "none".
    """
    from bioim2im.builtins._discriminators import PatchGAN

    return PatchGAN(spatial_dims, in_channels, channels=channels, layers=layers, norm=norm)


@hookimpl
def bioim2im_register_discriminators(registry: Registrar) -> None:
    registry.add("patchgan", patchgan)
