"""The network: one registered backbone feeding one or more registered heads, and the
precision it runs in."""

from __future__ import annotations

import torch
from torch import nn

from bioim2im.config import Preset
from bioim2im.config.components import components
from bioim2im.model.pointwise import make_pointwise
from bioim2im.plugin.registry import ComponentRegistry


class Im2ImModel(nn.Module):
    """``forward(image)`` returns a dict: head name -> that head's raw output (logits)."""

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(image)
        return {name: head(features) for name, head in self.heads.items()}


def build_model(preset: Preset, registry: ComponentRegistry) -> Im2ImModel:
    dims, model = preset.spatial_dims, preset.model
    backbone = registry.build(
        "backbone",
        model.backbone,
        spatial_dims=dims,
        in_channels=model.in_channels,
        out_channels=model.features,
    )
    heads = {
        name: registry.build(
            "head",
            head,
            spatial_dims=dims,
            in_channels=model.features,
            out_channels=head.out_channels,
        )
        for name, head in model.heads.items()
    }
    # Every head's 1x1 convolutions run as einsums on the CPU (see bioim2im.model.pointwise).
    return Im2ImModel(backbone, {name: make_pointwise(head) for name, head in heads.items()})


def build_losses(preset: Preset, registry: ComponentRegistry) -> dict[str, nn.Module]:
    return {
        name: registry.build("loss", head.loss, spatial_dims=preset.spatial_dims)
        for name, head in preset.model.heads.items()
    }


def components_used(preset: Preset, registry: ComponentRegistry) -> dict[str, str]:
    """Package -> version of every plugin whose components this preset uses."""
    used = {}
    for found in components(preset):
        component = registry.get(found.kind, found.spec.name)
        used[component.package] = component.version
    return used


def amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on GPUs that support it, fp16 on other GPUs, off on CPU."""
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None
    if choice == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if choice == "bf16" else torch.float16
