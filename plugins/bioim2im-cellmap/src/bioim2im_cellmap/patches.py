"""Training patches from CellMap crops (the ``cellmap`` data layout).

Like :class:`~bioim2im.data.dataset.PatchDataset`, item ``i`` is a pure function of
``(seed, i)`` (exact resume, disjoint DDP ranks) and maps to arrays:

- ``"image"``: (1, *patch_size), the raw data at the layout's ``input_scale``, read from the
  pyramid level nearest that scale (linear resampling when it differs), normalised patch by
  patch (the presets' ``fixed_range`` maps 0..255 to 0..1 whatever the patch);
- ``"target/<head>"``: (C, *patch_size) uint8, one mask per class of the layout's ``classes``, on the
  input's grid: the label level nearest ``target_scale`` read as nearest neighbour, > 0; with the
  layout's ``target`` "distance" or "signed_distance", float32 distances (voxels) computed from
  those masks over the patch (validation's ``"truth/<head>"`` stays the masks);
- ``"weight/<head>"``: (C, *patch_size) float32 (float16 as a tensor), per class: 1 where that
  class is annotated, 0 where it is not, so a class missing from a crop (or outside it, or NaN)
  gives no loss and no gradient for that class only. Only the central ``target_shape`` voxels are supervised: the rest of the
  input is context. With ``mutual_exclusion``, a class the crop does not annotate counts as a
  known negative (weight 1, target 0) wherever an annotated class excluding it is present. With
  ``pos_weight``, a class's positive voxels weigh ``pos_weight[c]`` (its background/foreground
  ratio over the training crops), so the loss balances each class's positives and negatives.

Training draws the crop (weighted by class counts with ``weighted_sampling``), then the patch:
centred on a foreground voxel of a class the crop holds (``data.foreground_fraction`` of the
time, the class chosen uniformly) or uniformly so that the supervised box lies in the crop.
Validation takes ``data.patches_per_image`` fixed patches of each validation crop in turn.
2D models (``patch_size`` of 2 numbers) train on single z planes: the input is (1, 1, Y, X) in
the volume and drops Z.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bioim2im.data.transforms import Augmentation, Normalization
from bioim2im.errors import UserError
from bioim2im.io.multiscale import Level
from bioim2im_cellmap.classes import exclusions, read_class_table
from bioim2im_cellmap.crops import (
    Crop,
    OpenedCrops,
    crop_weights,
    describe_counts,
    open_crops,
    pos_weights,
)
from bioim2im_cellmap.datasplit import CropRow, read_datasplit

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.plugin.registry import ComponentRegistry
    from bioim2im_cellmap.layout import CellMapLayout

VALIDATION_SEED = 12345


class CellMapPatches(Dataset[dict[str, torch.Tensor]]):
    """Patches of CellMap crops (see the module docstring); ``len`` is one epoch."""

    def __init__(
        self,
        crops: Sequence[Crop],
        *,
        classes: Sequence[str],
        head: str,
        patch_size: Sequence[int],
        input_scale: Sequence[float],
        target_shape: Sequence[int] | None = None,
        normalize: Normalization | None = None,
        augment: Augmentation | None = None,
        seed: int = 0,
        validation: bool = False,
        patches_per_crop: int = 4,
        foreground_fraction: float = 0.33,
        crop_probabilities: np.ndarray | None = None,
        excluded_by: Mapping[str, set[str]] | None = None,
        pos_weight: np.ndarray | None = None,
        target: str = "mask",
    ) -> None:
        if not crops:
            raise UserError("no crops to draw patches from")
        self.crops = list(crops)
        self.classes = list(classes)
        self.head = head
        self.spatial_dims = len(patch_size)
        # Geometry in the volume: 2D patches are single planes.
        self.shape = tuple(int(n) for n in ([1] * (3 - len(patch_size)) + list(patch_size)))
        supervised = list(target_shape) if target_shape is not None else list(patch_size)
        self.target_shape = tuple(int(n) for n in ([1] * (3 - len(supervised)) + supervised))
        self.scale = np.asarray(input_scale, dtype=np.float64)
        self.normalize = normalize
        self.augment = augment
        self.seed = seed
        self.validation = validation
        self.patches_per_crop = patches_per_crop
        self.foreground_fraction = foreground_fraction
        self.probabilities = crop_probabilities
        # Only classes some excluding class can reveal are inferred.
        self.excluded_by = {k: set(v) for k, v in (excluded_by or {}).items() if v}
        self.pos_weight = pos_weight
        self.target = target
        self._supervised = tuple(
            slice((n - t) // 2, (n - t) // 2 + t)
            for n, t in zip(self.shape, self.target_shape, strict=True)
        )

    def __len__(self) -> int:
        return len(self.crops) * self.patches_per_crop

    def epoch_length(self, batch_size: int) -> int:
        """Optimizer steps per epoch: every crop visited ``patches_per_crop`` times on average."""
        return math.ceil(len(self) / batch_size)

    # -- drawing -------------------------------------------------------------------------------

    def _crop_for(self, index: int, rng: np.random.Generator) -> Crop:
        if self.validation:
            return self.crops[(index // self.patches_per_crop) % len(self.crops)]
        if self.probabilities is None:
            return self.crops[int(rng.integers(len(self.crops)))]
        return self.crops[int(rng.choice(len(self.crops), p=self.probabilities))]

    def _centre(self, crop: Crop, rng: np.random.Generator) -> np.ndarray:
        """World position of the patch centre: on a foreground voxel, or uniform in the crop."""
        if not self.validation and rng.random() < self.foreground_fraction:
            held = [name for name, points in crop.foreground.items() if len(points)]
            if held:
                points = crop.foreground[held[int(rng.integers(len(held)))]]
                return np.asarray(points[int(rng.integers(len(points)))], dtype=np.float64)
        low, high = crop.box
        extent = np.asarray(self.target_shape) * self.scale
        centre = (low + high) / 2
        room = (high - low) - extent
        return np.where(room > 0, low + extent / 2 + rng.random(3) * np.maximum(room, 0), centre)

    def _first_voxel(self, crop: Crop, centre: np.ndarray) -> np.ndarray:
        """Centre of the patch's first voxel, on the raw level's grid when its scale is the
        input scale (so that the raw patch is a plain slice)."""
        first = centre - (np.asarray(self.shape) / 2 - 0.5) * self.scale
        raw = crop.raw
        if np.allclose(raw.scale, self.scale, rtol=0.01):
            # Halves round up (not to even), so the grid does not depend on the level's origin.
            steps = np.floor((first - np.asarray(raw.translation)) / self.scale + 0.5)
            first = np.asarray(raw.translation) + steps * self.scale
        return first

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """Item ``index`` as arrays (what ``dataset[index]`` returns, before torch)."""
        rng = np.random.default_rng([self.seed, index])
        crop = self._crop_for(index, rng)
        first = self._first_voxel(crop, self._centre(crop, rng))
        image = crop.raw.sample(first, self.scale, self.shape, order=1).astype(np.float32)[None]
        if self.normalize is not None:
            image = self.normalize(image)
        mask, weight = self._targets(crop, first)
        sample = {
            "image": image,
            f"target/{self.head}": encoded(mask, self.target, self.spatial_dims),
            f"weight/{self.head}": weight,
        }
        if self.spatial_dims == 2:
            sample = {k: v[:, 0] for k, v in sample.items()}
        if self.validation:
            # Validation metrics compare masks, whatever the head learns.
            sample[f"truth/{self.head}"] = mask[:, 0] if self.spatial_dims == 2 else mask
        elif self.augment is not None:
            sample = self.augment(sample, rng)
        return sample

    def _targets(self, crop: Crop, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks (uint8) and weights (float32), one channel per class."""
        n = len(self.classes)
        positive = np.zeros((n, *self.shape), dtype=bool)
        known = np.zeros((n, *self.shape), dtype=bool)
        centres = [
            f + s * np.arange(k) for f, s, k in zip(first, self.scale, self.shape, strict=True)
        ]
        for c, name in enumerate(self.classes):
            level = crop.labels.get(name)
            if level is None:
                continue
            # Voxels outside the crop are unannotated; NaN in a float label array too.
            known[c] = self._within(centres, level)
            floating = level.dtype.kind == "f"
            values = level.sample(first, self.scale, self.shape, order=0)
            if floating:
                known[c] &= np.isfinite(values)
            np.greater(values, 0, out=positive[c], where=known[c])
        for c, name in enumerate(self.classes):
            if name in crop.labels or name not in self.excluded_by:
                continue
            for other in self.excluded_by[name]:
                if other in crop.labels:
                    known[c] |= positive[self.classes.index(other)]
        weight = known.astype(np.float32)
        if self.pos_weight is not None:
            for c in range(n):
                np.putmask(weight[c], positive[c], self.pos_weight[c])
        return positive.view(np.uint8), weight

    def _within(self, centres: Sequence[np.ndarray], level: Level) -> np.ndarray:
        """Voxels of the patch's supervised box whose centre lies in ``level``."""
        masks = []
        for axis, (c, lo, hi, box) in enumerate(
            zip(centres, level.start, level.stop, self._supervised, strict=True)
        ):
            mask = (c >= lo) & (c < hi)
            mask[: box.start] = False
            mask[box.stop :] = False
            shape = [1, 1, 1]
            shape[axis] = -1
            masks.append(mask.reshape(shape))
        return masks[0] & masks[1] & masks[2]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tensors = {
            k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.sample(index).items()
        }
        # Compact types halve what workers pass to the training process: masks are uint8,
        # weights (0, 1 or a class's pos_weight) float16; losses cast both to the prediction's.
        key = f"weight/{self.head}"
        tensors[key] = tensors[key].to(torch.float16)
        return tensors


def encoded(mask: np.ndarray, target: str, spatial_dims: int) -> np.ndarray:
    """The masks (C, Z, Y, X) as the layout's ``target``: themselves ("mask"), or per class
    the Euclidean distance (voxels) of each foreground voxel to the background ("distance"),
    minus that of each background voxel to the foreground ("signed_distance"), over the patch
    (each plane on its own for 2D patches), as cellmap-data's distance transforms do."""
    if target == "mask":
        return mask
    from scipy.ndimage import distance_transform_edt

    out = np.zeros(mask.shape, np.float32)
    # 2D patches: each z plane is a patch of its own.
    pieces = [(slice(None),)] if spatial_dims == 3 else [(z,) for z in range(mask.shape[1])]
    for c in range(mask.shape[0]):
        for piece in pieces:
            inside = mask[(c, *piece)].astype(bool)
            distance = distance_transform_edt(inside) if inside.any() else np.zeros(inside.shape)
            if target == "signed_distance":
                outside = ~inside
                if outside.any():
                    distance = distance - distance_transform_edt(outside)
            out[(c, *piece)] = distance
    return out


# --- from a preset --------------------------------------------------------------------------


def scales(layout: CellMapLayout) -> tuple[list[float], list[float]]:
    """(input scale, target scale) in nm, ZYX."""
    return list(layout.input_scale), list(layout.target_scale or layout.input_scale)


def datasplit_rows(preset: Preset, layout: CellMapLayout, *, create: bool) -> list[CropRow]:
    """The rows of ``preset``'s datasplit; when its file does not exist and the layout has a
    ``search_path``, made from the crops found there (and written, with ``create``)."""
    from bioim2im.io import remote
    from bioim2im_cellmap.datasplit import make_datasplit, write_datasplit

    path = preset.data.path
    if path is None:
        raise UserError("data.path is not set: give the CellMap datasplit CSV")
    if (
        layout.search_path is None
        or remote.is_remote(str(path))
        or Path(path).exists()
        or Path(path).is_symlink()
    ):
        return read_datasplit(path)
    try:
        found = make_datasplit(
            layout.search_path,
            layout.classes,
            val_fraction=layout.validation_fraction,
            # As the toolbox's train makes it (its default: a crop lacking a class is not
            # validated on, it is trained on).
            force_all_classes=layout.force_all_classes or "validate",  # type: ignore[arg-type]
            seed=preset.train.seed,
        )
    except UserError as exc:
        raise UserError(
            f"data.path {path} does not exist, and data.layout.search_path cannot make it: {exc}"
        ) from None
    if create:
        write_datasplit(found.rows, path)
    return found.rows


def open_split(
    preset: Preset,
    layout: CellMapLayout,
    *,
    count: bool = True,
    hold: bool = False,
    create: bool = False,
) -> dict[str, OpenedCrops]:
    """The crops of each split of ``preset``'s datasplit (after ``force_all_classes``); with
    ``hold`` and ``data.cache = "memory"``, as many crops as fit held in memory; ``create``:
    write a datasplit made from ``search_path`` (see :func:`datasplit_rows`)."""
    from bioim2im_cellmap.datasplit import force_all_classes

    data = preset.data
    classes = list(layout.classes)
    # Made here, the datasplit is already forced; read, it is used as it is unless asked.
    force = layout.force_all_classes or "no"
    rows, changed = force_all_classes(datasplit_rows(preset, layout, create=create), classes, force)
    input_scale, target_scale = scales(layout)
    memory = 0
    if hold and data.cache == "memory":
        from bioim2im.data.cache import ArrayCache

        memory = ArrayCache("memory").memory_limit
    # A patch centred anywhere in a crop reaches half a patch beyond it.
    patch = [1] * (3 - len(data.patch_size)) + list(data.patch_size)
    context = [n * s / 2 for n, s in zip(patch, input_scale, strict=True)]
    result: dict[str, OpenedCrops] = {}
    for usage in ("train", "validate"):
        chosen = [row for row in rows if row.usage == usage]
        notes = [
            f"{row.label}: {f'moved from {usage} to {moved}' if moved else f'left out of {usage}'}"
            f", it lacks {', '.join(lacking)}"
            for row, lacking, moved in changed
            if row.usage == usage
        ]
        opened = open_crops(
            chosen,
            classes,
            input_scale=input_scale,
            target_scale=target_scale,
            skip_coarser=layout.skip_coarser,
            count=count,
            memory=memory,
            context=context,
        )
        opened.notes[:0] = notes
        if notes and not chosen:
            lacks = [f"{r.label} lacks {', '.join(c)}" for r, c, _ in changed if r.usage == usage]
            shown = "; ".join(lacks[:5])
            more = f"; and {len(notes) - 5} more" if len(notes) > 5 else ""
            opened.problems.append(
                f"{data.path}: data.layout.force_all_classes = {force!r} leaves no {usage} crop: "
                f"none annotates all of {', '.join(classes)} ({shown}{more})"
            )
        result[usage] = opened
        memory = max(0, memory - opened.held_bytes)
    if not result["train"].crops and not result["train"].problems:
        result["train"].problems.append(
            f"{data.path}: no training crop annotates any of {', '.join(classes)}"
        )
    return result


def class_exclusions(layout: CellMapLayout) -> dict[str, set[str]] | None:
    if not layout.mutual_exclusion:
        return None
    table = read_class_table(layout.class_table) if layout.class_table is not None else None
    return exclusions(layout.classes, table)


def cellmap_datasets(
    preset: Preset,
    layout: CellMapLayout,
    run_dir: Path | None = None,
    *,
    registry: ComponentRegistry,
) -> tuple[CellMapPatches, CellMapPatches | None]:
    """(training, validation or None) datasets of a preset with the ``cellmap`` layout."""
    from bioim2im.data.preparation import augmentation, preparation

    data, cellmap = preset.data, layout
    classes = list(layout.classes)
    splits = open_split(preset, layout, hold=True, create=True)
    problems = splits["train"].problems + splits["validate"].problems
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise UserError(f"datasplit {data.path} has {len(problems)} {noun}:", problems)
    train_crops = splits["train"].crops
    (head,) = preset.model.heads
    prep = preparation(preset, registry)
    weights = pos_weights(train_crops, classes) if cellmap.pos_weight else None
    options: dict[str, Any] = {
        "classes": classes,
        "head": head,
        "patch_size": data.patch_size,
        "input_scale": cellmap.input_scale,
        "target_shape": cellmap.target_shape,
        "normalize": prep.normalize,
        "patches_per_crop": data.patches_per_image,
        "excluded_by": class_exclusions(layout),
        "pos_weight": weights,
        "target": cellmap.target,
    }
    if run_dir is not None:
        _write_summary(run_dir, splits, classes, weights)
    train = CellMapPatches(
        train_crops,
        augment=augmentation(preset, registry),
        seed=preset.train.seed,
        foreground_fraction=data.foreground_fraction,
        crop_probabilities=crop_weights(train_crops, classes)
        if cellmap.weighted_sampling
        else None,
        **options,
    )
    val = None
    if splits["validate"].crops:
        val = CellMapPatches(
            splits["validate"].crops, seed=VALIDATION_SEED, validation=True, **options
        )
    return train, val


def _write_summary(
    run_dir: Path, splits: Mapping[str, OpenedCrops], classes: Sequence[str], weights: Any
) -> None:
    """``RUN_DIR/cellmap.json``: the crops of each split, what was left out, the class weights."""
    import json

    from bioim2im.io.atomic import atomic_file

    record = {
        "classes": list(classes),
        "pos_weight": None if weights is None else [float(w) for w in weights],
        **{
            usage: {
                "crops": [c.name for c in opened.crops],
                "held_in_memory": [c.name for c in opened.crops if c.raw.held],
                "left_out": opened.notes,
                "classes": describe_counts(opened.crops, classes),
            }
            for usage, opened in splits.items()
        },
    }
    with atomic_file(run_dir / "cellmap.json") as partial:
        partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
