"""The annotated crops of a datasplit, opened for training: levels chosen, classes counted.

For each crop (a datasplit row) the raw data's pyramid level nearest the input scale is chosen,
and for each class the crop annotates, its label level nearest the target scale. Reading every
label array once gives the class counts (foreground and total voxels), from which crop sampling
weights and per-class ``pos_weight`` follow, and a sample of foreground voxel positions, around
which patches can be centred.

With a memory budget, each crop's label arrays and the raw voxels around it (the crop plus the
context a patch can reach) are kept in memory, crop after crop while they fit: patches are then
slices of arrays that DataLoader workers share, with no store access. Crops beyond the budget
are read from their stores patch by patch.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from bioim2im.errors import UserError
from bioim2im.io import remote
from bioim2im.io.multiscale import Level, nearest_level, open_levels
from bioim2im_cellmap.datasplit import CropRow

# Foreground positions kept per class and crop for centring patches: enough to spread them.
FOREGROUND_SAMPLES = 20_000
# Crops opened at once; reading is mostly waiting on storage.
OPENING_THREADS = 8


@dataclass
class Crop:
    """One training crop, ready to draw patches from."""

    row: CropRow
    raw: Level
    labels: dict[str, Level]
    """Chosen label level per annotated class (among the classes asked for)."""
    box: tuple[np.ndarray, np.ndarray]
    """World box (lower, upper edges, nm) the crop's labels cover."""
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per annotated class: (foreground voxels, voxels) at its chosen level."""
    foreground: dict[str, np.ndarray] = field(default_factory=dict)
    """Per annotated class: world positions (k, 3) of a sample of its foreground voxels."""

    @property
    def name(self) -> str:
        return self.row.label


@dataclass
class OpenedCrops:
    crops: list[Crop]
    notes: list[str]
    """Crops or classes left out, and why (not errors)."""
    problems: list[str]
    """What makes the datasplit unusable as it is."""

    @property
    def held_bytes(self) -> int:
        """Bytes of the crops held in memory."""
        held = [c for c in self.crops if c.raw.held]
        return sum(level.read().nbytes for c in held for level in [c.raw, *c.labels.values()])


def open_crops(
    rows: Sequence[CropRow],
    classes: Sequence[str],
    *,
    input_scale: Sequence[float],
    target_scale: Sequence[float],
    skip_coarser: bool = False,
    count: bool = True,
    memory: int = 0,
    context: Sequence[float] = (0.0, 0.0, 0.0),
) -> OpenedCrops:
    """Open the crops of ``rows`` that annotate any of ``classes``; collect every problem.

    ``memory``: bytes of crops to hold in memory (labels and the raw within ``context`` nm of
    the crop), 0 for none.
    """
    notes: list[str] = []
    problems: list[str] = []
    budget = _Budget(memory)

    def one(row: CropRow) -> tuple[Crop | None, list[str], list[str]]:
        try:
            crop, crop_notes, crop_problems = _open(
                row, classes, input_scale, target_scale, skip_coarser
            )
            if crop is not None and memory:
                _hold(crop, context, budget)  # first, so that counting reads the held labels
            if crop is not None and count:
                _count(crop)
            return crop, crop_notes, crop_problems
        except UserError as exc:
            return None, [], [f"{row.label}: {exc}"]

    with ThreadPoolExecutor(max_workers=OPENING_THREADS) as pool:
        results = list(pool.map(one, rows))
    crops = []
    for crop, crop_notes, crop_problems in results:
        notes += crop_notes
        problems += crop_problems
        if crop is not None:
            crops.append(crop)
    return OpenedCrops(crops, notes, problems)


def _open(
    row: CropRow,
    classes: Sequence[str],
    input_scale: Sequence[float],
    target_scale: Sequence[float],
    skip_coarser: bool,
) -> tuple[Crop | None, list[str], list[str]]:
    wanted = [c for c in classes if c in row.classes]
    if not wanted:
        return None, [f"{row.label}: left out, annotates none of {', '.join(classes)}"], []
    raw = nearest_level(open_levels(row.raw), input_scale)
    labels: dict[str, Level] = {}
    notes: list[str] = []
    problems: list[str] = []
    for name in wanted:
        try:
            levels = open_levels(remote.join(row.crop, name))
        except UserError as exc:
            problems.append(f"{row.label}: class {name}: {exc}")
            continue
        if skip_coarser and any(
            s > t * 1.001 for s, t in zip(levels[0].scale, target_scale, strict=True)
        ):
            notes.append(
                f"{row.label}: class {name} treated as unannotated: its finest scale "
                f"{list(levels[0].scale)} is coarser than {list(target_scale)}"
            )
            continue
        labels[name] = nearest_level(levels, target_scale)
    if problems:
        return None, notes, problems
    if not labels:
        return None, notes, []
    lows = np.min([level.start for level in labels.values()], axis=0)
    highs = np.max([level.stop for level in labels.values()], axis=0)
    return Crop(row, raw, labels, (lows, highs)), notes, []


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        with self._lock:
            if nbytes > self.left:
                return False
            self.left -= nbytes
            return True


def _hold(crop: Crop, context: Sequence[float], budget: _Budget) -> None:
    """Keep the crop's labels and the raw around it in memory, if the budget allows."""
    margin = np.asarray(context) + np.asarray(crop.raw.scale)
    low, high = crop.box[0] - margin, crop.box[1] + margin
    raw = crop.raw
    corners = np.clip((np.asarray([low, high]) - raw.start) / np.asarray(raw.scale), 0, raw.shape)
    raw_bytes = int(np.prod(np.ceil(corners[1]) - np.floor(corners[0]))) * raw.dtype.itemsize
    label_bytes = sum(
        math.prod(level.shape) * level.dtype.itemsize for level in crop.labels.values()
    )
    if not budget.take(raw_bytes + label_bytes):
        return
    crop.raw = raw.region(low, high)
    crop.labels = {
        name: level
        if level.held
        else Level.in_memory(level.read(), level.scale, level.translation, level.location)
        for name, level in crop.labels.items()
    }


def _count(crop: Crop) -> None:
    """Class counts and a sample of foreground positions, from each label array read whole."""
    rng = np.random.default_rng(0)  # the same positions in every process and run
    for name, level in crop.labels.items():
        values = level.read()
        positive = values > 0
        crop.counts[name] = (int(np.count_nonzero(positive)), int(values.size))
        flat = np.flatnonzero(positive)
        if flat.size > FOREGROUND_SAMPLES:
            flat = np.sort(rng.choice(flat, FOREGROUND_SAMPLES, replace=False))
        voxels = np.stack(np.unravel_index(flat, positive.shape), axis=1)
        crop.foreground[name] = np.asarray(level.translation) + voxels * np.asarray(level.scale)


def pos_weights(crops: Sequence[Crop], classes: Sequence[str]) -> np.ndarray:
    """Per class, background / foreground voxels over the crops annotating it (the toolbox's
    ``pos_weight``); 1 for a class with no foreground anywhere."""
    weights = []
    for name in classes:
        foreground = sum(c.counts[name][0] for c in crops if name in c.counts)
        total = sum(c.counts[name][1] for c in crops if name in c.counts)
        weights.append((total - foreground) / foreground if foreground else 1.0)
    return np.asarray(weights, dtype=np.float32)


UNIFORM_SHARE = 0.1
"""Share of crop draws made uniformly, so that crops without foreground still teach negatives."""


def crop_weights(crops: Sequence[Crop], classes: Sequence[str]) -> np.ndarray:
    """Probability of drawing each crop: every class with foreground gets the same share, split
    over the crops by their foreground voxels of it, plus :data:`UNIFORM_SHARE` uniformly."""
    n = len(crops)
    by_class = []
    for name in classes:
        counts = np.array([c.counts.get(name, (0, 0))[0] for c in crops], dtype=np.float64)
        if counts.sum() > 0:
            by_class.append(counts / counts.sum())
    if not by_class:
        return np.full(n, 1.0 / n)
    weights = (1 - UNIFORM_SHARE) * np.mean(by_class, axis=0) + UNIFORM_SHARE / n
    return weights / weights.sum()


def describe_counts(crops: Sequence[Crop], classes: Sequence[str]) -> list[str]:
    """One line per class: crops annotating it, and its foreground fraction there."""
    lines = []
    for name in classes:
        annotating = [c for c in crops if name in c.counts]
        foreground = sum(c.counts[name][0] for c in annotating)
        total = sum(c.counts[name][1] for c in annotating)
        fraction = f"{foreground / total:.3%}" if total else "-"
        lines.append(f"{name}: {len(annotating)} crop(s), foreground {fraction}")
    return lines
