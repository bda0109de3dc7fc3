"""A bioim2im network rebuilt with torch and MONAI alone: a built-in backbone feeding built-in
heads, called with one image and returning the heads' outputs in order.

bioim2im copies this file, unchanged, into the bioimage.io packages it exports, as the
architecture of their ``pytorch_state_dict`` weights (``source`` with its ``sha256``,
``callable: Network``), so that any consumer of the package (bioimageio.core, a model-zoo
reviewer) rebuilds the network without bioim2im installed. It imports nothing of bioim2im and
names no module by a value it is given: each backbone and head it builds is one of the fixed
entries of :data:`BACKBONES` and :data:`HEADS`, the same MONAI and torch modules, with the same
parameter names, as bioim2im's built-in components (a test loads every one's weights strictly
and compares the outputs). bioim2im itself never runs this file: it recognises it by its
sha256 and builds the network from its own components.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional

_AFFINE_NORMS: dict[str, Any] = {"instance": ("instance", {"affine": True}), "batch": "batch"}


def _unet_strides(channels: Any, strides: Any) -> tuple[int, ...]:
    return tuple(strides) if strides is not None else (2,) * (len(channels) - 1)


def _unet(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=dims,
        in_channels=cin,
        out_channels=cout,
        channels=tuple(p["channels"]),
        strides=_unet_strides(p["channels"], p.get("strides")),
        kernel_size=p["kernel_size"],
        up_kernel_size=p["up_kernel_size"],
        num_res_units=p["num_res_units"],
        norm=p["norm"],
        dropout=p["dropout"],
    )


def _attention_unet(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(
        spatial_dims=dims,
        in_channels=cin,
        out_channels=cout,
        channels=tuple(p["channels"]),
        strides=_unet_strides(p["channels"], p.get("strides")),
        kernel_size=p["kernel_size"],
        up_kernel_size=p["up_kernel_size"],
        dropout=p["dropout"],
    )


def _basic_unet(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=dims,
        in_channels=cin,
        out_channels=cout,
        features=tuple(p["features"]),
        norm=_AFFINE_NORMS[p["norm"]],
        dropout=p["dropout"],
        upsample=p["upsample"],
    )


def _dynunet(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import DynUNet

    filters = tuple(p["filters"])
    strides = (
        tuple(p["strides"]) if p.get("strides") is not None else (1,) + (2,) * (len(filters) - 1)
    )
    return DynUNet(
        spatial_dims=dims,
        in_channels=cin,
        out_channels=cout,
        kernel_size=[p["kernel_size"]] * len(filters),
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name=_AFFINE_NORMS[p["norm_name"]],
        res_block=p["res_block"],
        dropout=p.get("dropout"),
    )


def _segresnet(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import SegResNet

    blocks_down = tuple(p["blocks_down"])
    blocks_up = p.get("blocks_up")
    norms: dict[str, Any] = {
        "group": ("group", {"num_groups": p["num_groups"]}),
        "instance": ("instance", {"affine": True}),
        "batch": "batch",
    }
    return SegResNet(
        spatial_dims=dims,
        in_channels=cin,
        out_channels=cout,
        init_filters=p["init_filters"],
        blocks_down=blocks_down,
        blocks_up=tuple(blocks_up) if blocks_up is not None else (1,) * (len(blocks_down) - 1),
        norm=norms[p["norm"]],
        dropout_prob=p.get("dropout_prob"),
        upsample_mode=p["upsample_mode"],
    )


def _unetr(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import UNETR

    return UNETR(
        spatial_dims=dims,
        in_channels=cin,
        out_channels=cout,
        img_size=tuple(p["img_size"]),
        feature_size=p["feature_size"],
        hidden_size=p["hidden_size"],
        mlp_dim=p["mlp_dim"],
        num_heads=p["num_heads"],
        proj_type=p["proj_type"],
        norm_name=p["norm_name"],
        res_block=p["res_block"],
        dropout_rate=p["dropout_rate"],
    )


def _swin_unetr(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    return SwinUNETR(
        spatial_dims=dims,
        in_channels=cin,
        out_channels=cout,
        feature_size=p["feature_size"],
        depths=tuple(p["depths"]),
        num_heads=tuple(p["num_heads"]),
        window_size=p["window_size"],
        patch_size=p["patch_size"],
        norm_name=p["norm_name"],
        drop_rate=p["drop_rate"],
        attn_drop_rate=p["attn_drop_rate"],
        dropout_path_rate=p["dropout_path_rate"],
        use_checkpoint=False,
        use_v2=p["use_v2"],
    )


# The U-Net of N2V2 (Höck et al., 2022) behind the ``n2v2_unet`` backbone; bioim2im's own
# module, kept here so that packages rebuild it too (see bioim2im.builtins._n2v2 for why it is
# built this way).


def _n2v2_norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
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
            _n2v2_norm(norm, spatial_dims, channels_out),
            nn.ReLU(inplace=True),
            conv(channels_out, channels_out, 3, padding=1, bias=norm == "none"),
            _n2v2_norm(norm, spatial_dims, channels_out),
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


def _n2v2_unet(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    strides = [
        (s,) * dims if isinstance(s, int) else tuple(s)
        for s in _unet_strides(p["channels"], p["strides"])
    ]
    return N2V2UNet(dims, cin, cout, p["channels"], strides, p["pool"], p["top_skip"], p["norm"])


BACKBONES = {
    "unet": _unet,
    "attention_unet": _attention_unet,
    "basic_unet": _basic_unet,
    "dynunet": _dynunet,
    "segresnet": _segresnet,
    "unetr": _unetr,
    "swin_unetr": _swin_unetr,
    "n2v2_unet": _n2v2_unet,
}
"""bioim2im's built-in backbones: ``(spatial_dims, in_channels, out_channels, params)``."""

_UPSAMPLE_MODES = {
    "deconv": "deconv",
    "pixelshuffle": "pixelshuffle",
    "interpolate": "nontrainable",
}


def _conv_head(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    from monai.networks.blocks import Convolution, UpSample

    layers: list[nn.Module] = []
    upsample = p["upsample"]
    factors = [upsample] * dims if isinstance(upsample, int) else list(upsample)
    mode = p["upsample_mode"]
    if any(f > 1 for f in factors):
        layers.append(
            UpSample(
                dims,
                cin,
                cin,
                scale_factor=factors[0] if mode == "pixelshuffle" else factors,
                mode=_UPSAMPLE_MODES[mode],
            )
        )
    channels = cin
    hidden = p.get("hidden_channels")
    if hidden is not None:
        layers.append(Convolution(dims, channels, hidden, kernel_size=p["kernel_size"], act="relu"))
        channels = hidden
    layers.append(Convolution(dims, channels, cout, kernel_size=p["kernel_size"], conv_only=True))
    return nn.Sequential(*layers)


class _Projection(nn.Module):
    def __init__(self, cin: int, cout: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.score = nn.Conv3d(cin, 1, kernel_size=1) if mode == "learned" else None
        self.project = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.score is not None:
            pooled = (features * self.score(features).softmax(dim=2)).sum(dim=2)
        elif self.mode == "max":
            pooled = features.amax(dim=2)
        else:
            pooled = features.mean(dim=2)
        return self.project(pooled)


def _projection_head(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    return _Projection(cin, cout, p["mode"])


class _EmbedSeg(nn.Module):
    def __init__(self, dims: int, cin: int, hidden: int) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d

        def branch(last: nn.Module) -> nn.Sequential:
            return nn.Sequential(conv(cin, hidden, 3, padding=1), nn.ReLU(inplace=True), last)

        self.embedding = branch(conv(hidden, 2 * dims, 1))
        self.seed = branch(conv(hidden, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.embedding(features), self.seed(features)], dim=1)


def _embedseg_head(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    return _EmbedSeg(dims, cin, p["hidden_channels"])


def _identity_head(dims: int, cin: int, cout: int, p: dict[str, Any]) -> nn.Module:
    return nn.Identity()


HEADS = {
    "conv": _conv_head,
    "projection": _projection_head,
    "embedseg": _embedseg_head,
    "identity": _identity_head,
}
"""bioim2im's built-in heads: ``(spatial_dims, in_channels, out_channels, params)``."""


class _Parts(nn.Module):
    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)


class Network(nn.Module):
    """``forward(image)``: the outputs of ``heads``, in their order (one tensor for one head).

    ``backbone``: ``{"name": ..., **parameters}``; ``heads``: a list of ``{"id": output name,
    "name": ..., "out_channels": ..., **parameters}``; ``features``: the backbone's output
    channels. Parameters are those of bioim2im's components, with their defaults filled in.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: int,
        backbone: dict[str, Any],
        heads: list[dict[str, Any]],
    ) -> None:
        super().__init__()
        params = {k: v for k, v in backbone.items() if k != "name"}
        built = BACKBONES[backbone["name"]](spatial_dims, in_channels, features, params)
        modules = {}
        for head in heads:
            options = {k: v for k, v in head.items() if k not in ("id", "name", "out_channels")}
            make = HEADS[head["name"]]
            modules[head["id"]] = make(spatial_dims, features, head["out_channels"], options)
        self.network = _Parts(built, modules)
        self.head_names = [head["id"] for head in heads]

    def forward(self, image: torch.Tensor) -> Any:
        features = self.network.backbone(image)
        outputs = tuple(self.network.heads[name](features) for name in self.head_names)
        return outputs[0] if len(outputs) == 1 else outputs
