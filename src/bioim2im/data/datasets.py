"""A preset's training and validation datasets, made of the entries preflight opened."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.data.cache import ArrayCache
from bioim2im.data.dataset import PatchDataset
from bioim2im.data.preflight import Report, ensure_usable, image_preflight
from bioim2im.data.preparation import augmentation
from bioim2im.data.volumes import Entry
from bioim2im.errors import UserError

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.plugin.registry import ComponentRegistry

# Validation patches do not depend on train.seed: the same patches for every run.
VALIDATION_SEED = 12345


def training_datasets(
    preset: Preset,
    run_dir: Path | None = None,
    *,
    check: bool = True,
    registry: ComponentRegistry | None = None,
) -> tuple[Any, Any]:
    """(training, validation or None) datasets of ``preset``, made by its data layout
    (``data.layout``); every data problem raised at once.

    ``check`` reads through the whole dataset as ``bioim2im check --data`` does (values
    included); without it only what opening the data reveals is checked. ``run_dir``: the run
    (where e.g. a seeded split is recorded), or None.
    """
    from bioim2im.data.layouts import dataset_layout

    if registry is None:
        from bioim2im.plugin.manager import get_registry

        registry = get_registry()
    layout = dataset_layout(preset, registry)
    datasets: tuple[Any, Any] = layout.datasets(preset, run_dir, registry=registry, check=check)
    return datasets


def image_datasets(
    preset: Preset,
    run_dir: Path | None = None,
    *,
    check: bool = True,
    registry: ComponentRegistry,
) -> tuple[PatchDataset, PatchDataset | None]:
    """(training, validation or None) datasets of ``preset``'s image files (the built-in
    layouts); every data problem raised at once.

    ``check`` reads through the whole dataset as ``bioim2im check --data`` does (values
    included); without it only what opening the files reveals is checked. A seeded split is
    written to ``run_dir/split.json``; the disk cache defaults to ``run_dir/cache``.
    """
    data = preset.data
    report = image_preflight(preset, registry=registry, run_dir=run_dir, scan=check)
    ensure_usable(report)
    assert report.prep is not None, "a report without problems has its preparation"
    train_targets, val_targets = unpaired_entries(report, preset) if data.unpaired else (None, None)
    cache_dir = data.cache_dir or (run_dir / "cache" if run_dir is not None else None)
    if data.cache == "disk" and cache_dir is None:
        raise UserError('data.cache = "disk" needs data.cache_dir (or a run directory)')
    options: dict[str, Any] = {
        "patch_size": data.patch_size,
        "cache": ArrayCache(data.cache, cache_dir),
        "patches_per_image": data.patches_per_image,
        "foreground_fraction": data.foreground_fraction,
        "class_balanced": data.class_balanced,
        "min_foreground": data.min_foreground,
        "pad": data.pad,
    }
    train = PatchDataset(
        report.opened.get("train", []),
        report.prep,
        augment=augmentation(preset, registry),
        seed=preset.train.seed,
        unpaired_targets=train_targets,
        **options,
    )
    val = None
    if report.opened.get("val"):
        val = PatchDataset(
            report.opened["val"],
            report.prep,
            seed=VALIDATION_SEED,
            validation=True,
            unpaired_targets=val_targets,
            **options,
        )
    return train, val


def unpaired_entries(
    report: Report, preset: Preset
) -> tuple[dict[str, list[Entry]], dict[str, list[Entry]]]:
    """Each head's target entries for training and for validation (unpaired data)."""
    assert report.prep is not None
    train: dict[str, list[Entry]] = {}
    val: dict[str, list[Entry]] = {}
    for head in report.prep.heads:
        found = report.opened_targets.get(head.target, {})
        train[head.head] = found.get("train", [])
        # No target matches an input anyway: without held-out targets, validation inputs are
        # paired with training targets.
        val[head.head] = found.get("val") or train[head.head]
    return train, val
