"""Built-in backbones: MONAI networks mapping an image to ``out_channels`` feature maps.

Parameter names are MONAI's. Each backbone registers ``divisor``: a function of its validated
parameters giving the number every spatial size of its input must be a multiple of.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Norm = Literal["instance", "batch"]
# The channels of BasicUNet's five encoder levels and of its last decoder level.
BasicUNetFeatures = tuple[
    PositiveInt, PositiveInt, PositiveInt, PositiveInt, PositiveInt, PositiveInt
]
# One entry per SwinUNETR stage.
SwinStages = tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt]

# MONAI's own defaults for these networks: instance norm with learnable scale and shift.
_AFFINE_NORMS: dict[str, Any] = {"instance": ("instance", {"affine": True}), "batch": "batch"}


# A stride: one number for every axis, or one per spatial axis ((Z,) Y, X), e.g. [1, 2, 2] to
# keep the resolution of a coarse Z while Y and X are halved.
Stride = PositiveInt | tuple[PositiveInt, ...]


def _unet_strides(channels: tuple[int, ...], strides: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """Halve the resolution between consecutive levels unless strides are given."""
    if len(channels) < 2:
        raise ValueError(f"channels needs at least 2 levels, got {list(channels)}")
    if strides is None:
        return (2,) * (len(channels) - 1)
    if len(strides) != len(channels) - 1:
        raise ValueError(
            f"strides needs one entry fewer than channels ({len(channels) - 1}), got "
            f"{_listed(strides)}"
        )
    return tuple(s if isinstance(s, int) else tuple(s) for s in strides)


def _listed(strides: Any) -> list[Any]:
    return [s if isinstance(s, int) else list(s) for s in strides]


def _check_unet(*, channels: Any, strides: Any, spatial_dims: int | None = None, **_: Any) -> None:
    chosen = _unet_strides(tuple(channels), None if strides is None else tuple(strides))
    _check_per_axis(chosen, spatial_dims)


def _check_per_axis(strides: tuple[Any, ...], spatial_dims: int | None) -> None:
    """Strides given per axis have one number per spatial axis, all alike in length."""
    lengths = {len(s) for s in strides if not isinstance(s, int)}
    if len(lengths) > 1 or (spatial_dims is not None and lengths - {spatial_dims}):
        axes = f"{spatial_dims} numbers ({'ZYX' if spatial_dims == 3 else 'YX'})"
        raise ValueError(
            f"strides given per axis must each have {axes if spatial_dims else 'as many numbers'}"
            f", got {_listed(strides)}"
        )


def per_axis_product(strides: tuple[Any, ...]) -> int | tuple[int, ...]:
    """The total downsampling: one number, or one per axis when some stride is per axis."""
    lengths = {len(s) for s in strides if not isinstance(s, int)}
    if not lengths:
        return math.prod(strides)
    (ndim,) = lengths
    return tuple(
        math.prod(s if isinstance(s, int) else s[axis] for s in strides) for axis in range(ndim)
    )


def unet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: tuple[PositiveInt, ...] = (16, 32, 64, 128),
    strides: tuple[Stride, ...] | None = None,
    kernel_size: PositiveInt = 3,
    up_kernel_size: PositiveInt = 3,
    num_res_units: Annotated[int, Field(ge=0)] = 2,
    norm: Norm = "instance",
    dropout: Probability = 0.0,
) -> Any:
    """U-Net with residual units (MONAI UNet); strides default to 2 between levels."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=_unet_strides(channels, strides),
        kernel_size=kernel_size,
        up_kernel_size=up_kernel_size,
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )


def attention_unet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: tuple[PositiveInt, ...] = (16, 32, 64, 128),
    strides: tuple[PositiveInt, ...] | None = None,
    kernel_size: PositiveInt = 3,
    up_kernel_size: PositiveInt = 3,
    dropout: Probability = 0.0,
) -> Any:
    """U-Net with attention gates on the skip connections (MONAI AttentionUnet)."""
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=_unet_strides(channels, strides),
        kernel_size=kernel_size,
        up_kernel_size=up_kernel_size,
        dropout=dropout,
    )


def n2v2_unet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: tuple[PositiveInt, ...] = (32, 64, 128),
    strides: tuple[Stride, ...] | None = None,
    pool: Literal["maxblur", "avg", "max"] = "maxblur",
    top_skip: bool = False,
    norm: Literal["batch", "instance", "none"] = "batch",
) -> Any:
    """U-Net without grid artefacts for self-supervised denoising (N2V2): max-blur-pool down, interpolation up, no full-resolution skip."""
    from bioim2im.builtins._n2v2 import N2V2UNet, per_axis

    return N2V2UNet(
        spatial_dims,
        in_channels,
        out_channels,
        channels,
        per_axis(_unet_strides(channels, strides), spatial_dims),
        pool,
        top_skip,
        norm,
    )


def _unet_divisor(params: Mapping[str, Any]) -> int | tuple[int, ...]:
    return per_axis_product(_unet_strides(params["channels"], params["strides"]))


def basic_unet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    features: BasicUNetFeatures = (32, 32, 64, 128, 256, 32),
    norm: Norm = "instance",
    dropout: Probability = 0.0,
    upsample: Literal["deconv", "nontrainable", "pixelshuffle"] = "deconv",
) -> Any:
    """Plain U-Net with four downsamplings (MONAI BasicUNet)."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        features=features,
        norm=_AFFINE_NORMS[norm],
        dropout=dropout,
        upsample=upsample,
    )


def _dynunet_strides(filters: tuple[int, ...], strides: tuple[int, ...] | None) -> tuple[int, ...]:
    """Full resolution at the first level, then halve it at each deeper one, unless given."""
    if len(filters) < 3:
        raise ValueError(f"filters needs at least 3 levels, got {list(filters)}")
    if strides is None:
        return (1,) + (2,) * (len(filters) - 1)
    if len(strides) != len(filters):
        raise ValueError(f"strides needs one entry per level ({len(filters)}), got {list(strides)}")
    return tuple(strides)


def _check_dynunet(*, filters: Any, strides: Any, **_: Any) -> None:
    _dynunet_strides(tuple(filters), None if strides is None else tuple(strides))


def dynunet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    filters: tuple[PositiveInt, ...] = (32, 64, 128, 256),
    strides: tuple[PositiveInt, ...] | None = None,
    kernel_size: PositiveInt = 3,
    norm_name: Norm = "instance",
    res_block: bool = False,
    dropout: Probability | None = None,
) -> Any:
    """nnU-Net-style U-Net (MONAI DynUNet); one level per entry of filters, strides (1, 2, 2, ...)."""
    from monai.networks.nets import DynUNet

    strides = _dynunet_strides(filters, strides)
    return DynUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[kernel_size] * len(filters),
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name=_AFFINE_NORMS[norm_name],
        res_block=res_block,
        dropout=dropout,
    )


def _dynunet_divisor(params: Mapping[str, Any]) -> int:
    return math.prod(_dynunet_strides(params["filters"], params["strides"]))


def segresnet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    init_filters: PositiveInt = 8,
    blocks_down: tuple[PositiveInt, ...] = (1, 2, 2, 4),
    blocks_up: tuple[PositiveInt, ...] | None = None,
    norm: Literal["group", "instance", "batch"] = "group",
    num_groups: PositiveInt = 8,
    dropout_prob: Probability | None = None,
    upsample_mode: Literal["nontrainable", "deconv", "pixelshuffle"] = "nontrainable",
) -> Any:
    """Residual encoder-decoder (MONAI SegResNet); one block per level up by default."""
    from monai.networks.nets import SegResNet

    if blocks_up is None:
        blocks_up = (1,) * (len(blocks_down) - 1)
    norms: dict[str, Any] = {
        "group": ("group", {"num_groups": num_groups}),
        "instance": ("instance", {"affine": True}),
        "batch": "batch",
    }
    return SegResNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        init_filters=init_filters,
        blocks_down=blocks_down,
        blocks_up=blocks_up,
        norm=norms[norm],
        dropout_prob=dropout_prob,
        upsample_mode=upsample_mode,
    )


# UNETR cuts its input into 16-pixel patches, whatever its other parameters.
_UNETR_PATCH = 16


def unetr(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    img_size: tuple[PositiveInt, ...],
    feature_size: PositiveInt = 16,
    hidden_size: PositiveInt = 768,
    mlp_dim: PositiveInt = 3072,
    num_heads: PositiveInt = 12,
    proj_type: Literal["conv", "perceptron"] = "conv",
    norm_name: Norm = "instance",
    res_block: bool = True,
    dropout_rate: Probability = 0.0,
) -> Any:
    """Vision-transformer encoder with a U-Net decoder (MONAI UNETR); input size fixed to img_size."""
    from monai.networks.nets import UNETR

    net = UNETR(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        img_size=img_size,
        feature_size=feature_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_heads=num_heads,
        proj_type=proj_type,
        norm_name=norm_name,
        res_block=res_block,
        dropout_rate=dropout_rate,
    )
    # MONAI's transformer blocks hold a cross-attention norm that UNETR never uses: frozen, so
    # that DistributedDataParallel does not wait for its gradients.
    for block in net.vit.blocks:
        block.norm_cross_attn.requires_grad_(False)
    return net


def swin_unetr(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    feature_size: Annotated[int, Field(gt=0, multiple_of=12)] = 24,
    depths: SwinStages = (2, 2, 2, 2),
    num_heads: SwinStages = (3, 6, 12, 24),
    window_size: PositiveInt = 7,
    patch_size: PositiveInt = 2,
    norm_name: Norm = "instance",
    drop_rate: Probability = 0.0,
    attn_drop_rate: Probability = 0.0,
    dropout_path_rate: Probability = 0.0,
    use_checkpoint: bool = False,
    use_v2: bool = False,
) -> Any:
    """Swin-transformer encoder with a U-Net decoder (MONAI SwinUNETR)."""
    from monai.networks.nets import SwinUNETR

    return SwinUNETR(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=feature_size,
        depths=depths,
        num_heads=num_heads,
        window_size=window_size,
        patch_size=patch_size,
        norm_name=norm_name,
        drop_rate=drop_rate,
        attn_drop_rate=attn_drop_rate,
        dropout_path_rate=dropout_path_rate,
        use_checkpoint=use_checkpoint,
        use_v2=use_v2,
    )


def _check_segresnet(*, blocks_down: Any, blocks_up: Any, **_: Any) -> None:
    if blocks_up is not None and len(blocks_up) != len(blocks_down) - 1:
        raise ValueError(
            f"blocks_up needs one entry fewer than blocks_down ({len(blocks_down) - 1}), "
            f"got {list(blocks_up)}"
        )


def _check_unetr(*, img_size: Any, spatial_dims: int | None, **_: Any) -> None:
    wrong_length = spatial_dims is not None and len(img_size) != spatial_dims
    if wrong_length or any(size % _UNETR_PATCH for size in img_size):
        raise ValueError(
            f"img_size needs {spatial_dims or 'one'} size(s) per spatial axis, each a multiple of "
            f"{_UNETR_PATCH}; got {list(img_size)}"
        )


def _swin_unetr_divisor(params: Mapping[str, Any]) -> int:
    # SwinUNETR.forward checks divisibility by patch_size**5 (32 for the default patch_size 2).
    return int(params["patch_size"]) ** 5


# What each parameter means, for the Args: section every backbone's docstring gets (MONAI's
# names; see bioim2im list-plugins --kind backbone --params).
_PARAMETERS = {
    "channels": "Feature channels of each level, from the top (full resolution) down.",
    "strides": "Downsampling from each level to the next (one fewer than channels); default 2 "
    "each. Patch sizes must be multiples of their product.",
    "strides_per_axis": "Downsampling from each level to the next (one fewer than channels), "
    "one number or one per spatial axis ((Z,) Y, X), e.g. [[1, 2, 2], 2, 2] to keep a coarse Z "
    "at the first level; default 2 each. Patch sizes must be multiples of their product along "
    "each axis.",
    "kernel_size": "Size of the convolutions.",
    "up_kernel_size": "Size of the transposed convolutions that upsample.",
    "num_res_units": "Residual units per level (0: plain convolutions).",
    "norm": "Normalisation layers.",
    "dropout": "Dropout probability.",
    "pool": 'How a level is downsampled: "maxblur" (a max over each 2x2 neighbourhood at '
    'stride 1, then a binomial blur before subsampling: no grid texture), "avg" or "max".',
    "top_skip": "Keep the skip connection of the full-resolution level (N2V2 drops it: it "
    "hands the input's pixel-wise noise to the output).",
    "features": "Channels of the five encoder levels and of the last decoder level.",
    "upsample": 'How the decoder upsamples: "deconv" (transposed convolution), '
    '"nontrainable" (interpolation) or "pixelshuffle".',
    "filters": "Feature channels of each level, from the top down.",
    "norm_name": "Normalisation layers.",
    "res_block": "Residual blocks instead of plain convolution blocks.",
    "init_filters": "Feature channels of the first level; each deeper level doubles them.",
    "blocks_down": "Residual blocks of each encoder level (its length is the number of levels).",
    "blocks_up": "Residual blocks of each decoder level (one fewer than blocks_down); default 1 "
    "each.",
    "num_groups": "Groups of group normalisation.",
    "dropout_prob": "Dropout probability; none when unset.",
    "upsample_mode": 'How the decoder upsamples: "nontrainable" (interpolation), "deconv" or '
    '"pixelshuffle".',
    "img_size": "The one input size it takes (per spatial axis); patch and window sizes must "
    "equal it.",
    "feature_size": "Feature channels of the decoder's first level.",
    "hidden_size": "Width of the transformer's tokens.",
    "mlp_dim": "Width of the transformer's feed-forward layers.",
    "num_heads": "Attention heads (per stage for swin_unetr).",
    "proj_type": 'How patches become tokens: "conv" or "perceptron".',
    "dropout_rate": "Dropout probability.",
    "depths": "Transformer blocks of each of the four stages.",
    "window_size": "Side of the attention windows, in tokens.",
    "patch_size": "Side of the patches that become tokens; inputs must be multiples of "
    "patch_size^5.",
    "drop_rate": "Dropout probability.",
    "attn_drop_rate": "Dropout probability of the attention weights.",
    "dropout_path_rate": "Stochastic depth: probability of skipping a block.",
    "use_checkpoint": "Recompute activations in the backward pass (less memory, more time).",
    "use_v2": "SwinUNETR v2 (a residual convolution block before each stage).",
}


_MEANINGS = {
    ("unet", "strides"): _PARAMETERS["strides_per_axis"],
    ("n2v2_unet", "strides"): _PARAMETERS["strides_per_axis"],
    ("n2v2_unet", "norm"): 'Normalisation layers: "batch" (its running statistics make '
    'the output independent of the prediction window), "instance" or "none".',
    ("dynunet", "strides"): "Stride of each level's first convolution, one per entry of "
    "filters; default 1 at the top, then 2. Patch sizes must be multiples of their product.",
}


def _document(factory: Any) -> None:
    """Add the Args: section of ``factory``'s parameters to its docstring."""
    import inspect

    names = [n for n in inspect.signature(factory).parameters if n in _PARAMETERS]
    if names and "Args:" not in (factory.__doc__ or ""):
        lines = [
            f"    {name}: {_MEANINGS.get((factory.__name__, name), _PARAMETERS[name])}"
            for name in names
        ]
        factory.__doc__ = f"{factory.__doc__}\n\nArgs:\n" + "\n".join(lines)


@hookimpl
def bioim2im_register_backbones(registry: Registrar) -> None:
    for factory in (
        unet,
        attention_unet,
        basic_unet,
        dynunet,
        segresnet,
        unetr,
        swin_unetr,
        n2v2_unet,
    ):
        _document(factory)
    registry.add("unet", unet, divisor=_unet_divisor, check=_check_unet)
    registry.add("n2v2_unet", n2v2_unet, divisor=_unet_divisor, check=_check_unet)
    registry.add("attention_unet", attention_unet, divisor=_unet_divisor, check=_check_unet)
    registry.add("basic_unet", basic_unet, divisor=lambda params: 16)
    registry.add("dynunet", dynunet, divisor=_dynunet_divisor, check=_check_dynunet)
    registry.add(
        "segresnet",
        segresnet,
        divisor=lambda params: 2 ** (len(params["blocks_down"]) - 1),
        check=_check_segresnet,
    )
    registry.add(
        "unetr",
        unetr,
        divisor=lambda params: _UNETR_PATCH,
        input_size=lambda params: tuple(params["img_size"]),
        check=_check_unetr,
    )
    registry.add("swin_unetr", swin_unetr, divisor=_swin_unetr_divisor)
