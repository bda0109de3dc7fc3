"""A preset's training and validation datasets: files found, checked, opened, settings built."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.data.cache import ArrayCache
from bioim2im.data.dataset import PatchDataset, unpaired_preparation
from bioim2im.data.sources import DEFAULT_TARGET, Splits, find_splits, reader_suffixes
from bioim2im.data.transforms import Compose
from bioim2im.data.volumes import Entry, HeadTarget, Preparation, open_entries
from bioim2im.errors import UserError

if TYPE_CHECKING:
    from bioim2im.config.schema import HeadConfig, Preset
    from bioim2im.registry import ComponentRegistry

# Validation patches do not depend on train.seed: the same patches for every run.
VALIDATION_SEED = 12345


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


def training_datasets(
    preset: Preset,
    run_dir: Path | None = None,
    *,
    check: bool = True,
    registry: ComponentRegistry | None = None,
    splits: Splits | None = None,
) -> tuple[PatchDataset, PatchDataset | None]:
    """(training, validation or None) datasets of ``preset``; every data problem raised at once.

    ``check`` first scans the whole dataset as ``bioim2im check --data`` does (values included);
    without it only what opening the files reveals is checked. A seeded split is written to
    ``run_dir/split.json``; the disk cache defaults to ``run_dir/cache``.
    """
    if registry is None:
        from bioim2im.plugins import get_registry

        registry = get_registry()
    data = preset.data
    if data.layout == "cellmap":
        from bioim2im.data.cellmap import cellmap_datasets

        return cellmap_datasets(preset, run_dir, registry=registry)  # type: ignore[return-value]
    if check:
        from bioim2im.data.preflight import ensure_usable, preflight

        ensure_usable(preflight(preset, registry=registry))
    if splits is None:
        splits = find_splits(
            data,
            preset.model.heads,
            seed=preset.train.seed,
            run_dir=run_dir,
            suffixes=reader_suffixes(registry),
        )
    splits.ensure_usable()
    prep = preparation(preset, registry)
    train_entries, problems = open_entries(splits.train, prep, registry)
    val_entries, val_problems = open_entries(splits.val, prep, registry)
    problems += val_problems
    train_targets, val_targets = None, None
    if data.unpaired:
        train_targets, val_targets, target_problems = unpaired_entries(splits, prep, registry)
        problems += target_problems
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise UserError(f"dataset {data.path} has {len(problems)} {noun}:", problems)
    cache_dir = data.cache_dir or (run_dir / "cache" if run_dir is not None else None)
    if data.cache == "disk" and cache_dir is None:
        raise UserError('data.cache = "disk" needs data.cache_dir (or a run directory)')
    cache = ArrayCache(data.cache, cache_dir)
    options: dict[str, Any] = {
        "patch_size": data.patch_size,
        "cache": cache,
        "patches_per_image": data.patches_per_image,
        "foreground_fraction": data.foreground_fraction,
        "class_balanced": data.class_balanced,
        "min_foreground": data.min_foreground,
        "pad": data.pad,
    }
    train = PatchDataset(
        train_entries,
        prep,
        augment=augmentation(preset, registry),
        seed=preset.train.seed,
        unpaired_targets=train_targets,
        **options,
    )
    val = None
    if val_entries:
        val = PatchDataset(
            val_entries,
            prep,
            seed=VALIDATION_SEED,
            validation=True,
            unpaired_targets=val_targets,
            **options,
        )
    return train, val


def unpaired_entries(
    splits: Splits, prep: Preparation, registry: ComponentRegistry
) -> tuple[dict[str, list[Entry]], dict[str, list[Entry]], list[str]]:
    """Each head's target entries for training and for validation (unpaired data), and the
    problems of the target files."""
    train: dict[str, list[Entry]] = {}
    val: dict[str, list[Entry]] = {}
    problems: list[str] = []
    for head in prep.heads:
        found = splits.unpaired_targets[head.target]
        target_prep = unpaired_preparation(prep, head)
        train[head.head], trouble = open_entries(found.train, target_prep, registry)
        val[head.head], val_trouble = open_entries(found.val, target_prep, registry)
        problems += trouble + val_trouble
        # No target matches an input anyway: without held-out targets, validation inputs are
        # paired with training targets.
        val[head.head] = val[head.head] or train[head.head]
    return train, val, problems
