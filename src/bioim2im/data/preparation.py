"""What a preset does to its arrays: the normalisations and target settings (a
:class:`~bioim2im.data.volumes.Preparation`) and the augmentations, built from the registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bioim2im.data.sources import DEFAULT_TARGET
from bioim2im.data.transforms import Compose
from bioim2im.data.volumes import HeadTarget, Preparation
from bioim2im.errors import UserError

if TYPE_CHECKING:
    from bioim2im.config.schema import HeadConfig, Preset
    from bioim2im.plugin.registry import ComponentRegistry


def sample_keys(heads: list[str]) -> list[str]:
    """The keys of a training sample, in the order transforms receive them."""
    return ["image", *(f"target/{h}" for h in heads), *(f"weight/{h}" for h in heads)]


def preparation(preset: Preset, registry: ComponentRegistry) -> Preparation:
    """The settings that decide ``preset``'s arrays, with its normalisations built."""
    data = preset.data
    heads = []
    for name, head in preset.model.heads.items():
        component = registry.get("head", head.name)
        output_dims = component.extras.get("output_spatial_dims", preset.spatial_dims)
        normalize, spec = None, None
        if head.task == "regression":
            chosen = head.target_normalize
            spec = chosen.model_dump() if chosen is not None else {"name": "zscore"}
            normalize = _normalization(registry, spec, f"model.heads.{name}.target_normalize")
        heads.append(
            HeadTarget(
                head=name,
                target=head.target or DEFAULT_TARGET,
                task=head.task,
                out_channels=head.out_channels,
                ignore_value=head.ignore_value,
                normalize=normalize,
                normalize_spec=spec,
                dropped_axes=tuple(range(preset.spatial_dims - output_dims)),
                scale=_scale(component.extras.get("scale", 1), head, output_dims),
                encode=registry.get("loss", head.loss.name).extras.get("encode_target"),
            )
        )
    normalize_spec = data.normalize.model_dump()
    return Preparation(
        spatial_dims=preset.spatial_dims,
        in_channels=preset.model.in_channels,
        normalize=_normalization(registry, normalize_spec, "data.normalize"),
        normalize_spec=normalize_spec,
        heads=heads,
        axes=data.axes,
        voxel_size=data.voxel_size,
        target_voxel_size=data.target_voxel_size,
        nan_policy=data.nan_policy,
    )


def _scale(scale: Any, head: HeadConfig, dims: int) -> tuple[int, ...]:
    """Target voxels per input voxel along each of the head's ``dims`` output axes: the head's
    registered ``scale`` (a number, one per axis, or a function of its parameters)."""
    if callable(scale):
        scale = scale(head.params())
    return tuple(int(f) for f in scale) if isinstance(scale, Sequence) else (int(scale),) * dims


def _normalization(registry: ComponentRegistry, spec: Mapping[str, Any], key: str) -> Any:
    component = registry.get("transform", spec["name"])
    if component.extras.get("role") == "augment":
        raise UserError(
            f"{key}: '{spec['name']}' is an augmentation, not a normalisation (it belongs in data.augment)"
        )
    return component.build({k: v for k, v in spec.items() if k != "name"})


def augmentation(preset: Preset, registry: ComponentRegistry) -> Compose | None:
    """``data.augment`` built for this preset's sample keys, or None when empty."""
    if not preset.data.augment:
        return None
    keys = sample_keys(list(preset.model.heads))
    for position, spec in enumerate(preset.data.augment, start=1):
        extras = registry.get("transform", spec.name).extras
        if extras.get("role") == "normalize":
            raise UserError(
                f"data.augment: '{spec.name}' is a normalisation, not an augmentation "
                "(use it as data.normalize or a head's target_normalize)"
            )
        if extras.get("runs_last") and position < len(preset.data.augment):
            raise UserError(f"data.augment: '{spec.name}' must be the last augmentation")
    # Regression targets are intensities: resampled like the image, but not augmented like it.
    heads = preset.model.heads
    labels = [f"target/{h}" for h, spec in heads.items() if spec.task != "regression"]
    labels += [f"weight/{h}" for h in heads]
    return Compose(
        [
            registry.build(
                "transform",
                spec,
                spatial_dims=preset.spatial_dims,
                keys=keys,
                image_keys=["image"],
                label_keys=labels,
            )
            for spec in preset.data.augment
        ]
    )
