"""From files to training arrays: one *entry* per image (a file, or one time point / scene of
it), read as (C, *spatial) float32, NaN-checked, resampled and normalised.

:func:`open_entries` opens the files of each pair lazily (headers only), checks that they fit
together and splits files with T or S axes into one entry per time point / scene; it collects
problems rather than raising. :func:`load_volume` turns an entry into a :class:`Volume`, whose
arrays are either decoded whole (and cached) or read patch by patch from the files.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bioim2im.data.cache import ArrayCache, cache_key
from bioim2im.data.sources import Pair
from bioim2im.data.transforms import Normalization
from bioim2im.errors import UserError
from bioim2im.io import LazyImage, open_image
from bioim2im.io.base import beyond_memory
from bioim2im.plugin.registry import ComponentRegistry

Task = Literal["semantic", "instance", "regression"]
SPATIAL = "ZYX"
# Foreground voxels kept per class for oversampling: enough to spread patches, small to store.
MAX_FOREGROUND = 100_000
# Voxels read (evenly strided) to compute the statistics of an image normalised patch by patch.
LAZY_STATISTICS_VOXELS = 1 << 24


@dataclass(frozen=True)
class HeadTarget:
    """What one head needs from its target file."""

    head: str
    target: str
    """Target name: subfolder, file suffix or CSV column."""
    task: Task
    out_channels: int
    ignore_value: float | None = None
    normalize: Normalization | None = None
    """Regression only: normalisation of the target (computed per image)."""
    normalize_spec: Mapping[str, Any] | None = None
    dropped_axes: tuple[int, ...] = ()
    """Spatial axes the head's output lacks (``(0,)`` for a 3D->2D projection): its target
    file has the input's other axes."""
    scale: tuple[int, ...] = ()
    """Target voxels per input voxel along each axis the target has, for a head that upsamples
    (super-resolution): its target file is that many times larger. Empty: 1 on every axis."""
    encode: Callable[[np.ndarray], np.ndarray] | None = None
    """The target its loss asks for, made from the label patch (see
    :mod:`bioim2im.data.encodings`); None: the task's encoding (:mod:`bioim2im.data.targets`)."""

    @property
    def is_label(self) -> bool:
        return self.task != "regression"

    @property
    def same_grid(self) -> bool:
        """The target has the input's voxels: no axis projected away, none upsampled."""
        return not self.dropped_axes and all(f == 1 for f in self.scale)

    def kept(self, values: Sequence[Any]) -> list[Any]:
        """``values`` (one per spatial axis of the input) for the axes the target has."""
        return [v for i, v in enumerate(values) if i not in self.dropped_axes]

    def region(self, region: Sequence[slice]) -> list[slice]:
        """The target's voxels under ``region`` (slices of the input's spatial axes)."""
        return [slice(s.start * f, s.stop * f) for s, f in self._scaled(region)]

    def padding(self, padding: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """The target's padding for the input's ``padding`` (before, after) per axis."""
        return [(before * f, after * f) for (before, after), f in self._scaled(padding)]

    def _scaled(self, values: Sequence[Any]) -> list[tuple[Any, int]]:
        kept = self.kept(values)
        return list(zip(kept, self.scale or [1] * len(kept), strict=True))

    def cost_map(self, cost_map: np.ndarray) -> np.ndarray:
        """A cost map of input voxels (1, *spatial) on the target's grid."""
        if self.dropped_axes:
            # A projected target is weighted where any voxel projecting onto it is.
            cost_map = cost_map.max(axis=tuple(1 + a for a in self.dropped_axes))
        for axis, f in enumerate(self.scale, start=1):
            cost_map = np.repeat(cost_map, f, axis=axis) if f > 1 else cost_map
        return cost_map


@dataclass(frozen=True)
class Preparation:
    """Every setting that decides the arrays of an entry (and so its cache keys)."""

    spatial_dims: int
    in_channels: int
    normalize: Normalization
    normalize_spec: Mapping[str, Any]
    heads: Sequence[HeadTarget]
    axes: str | None = None
    voxel_size: Sequence[float] | None = None
    target_voxel_size: Sequence[float] | None = None
    nan_policy: Literal["error", "zero"] = "error"


class View:
    """One entry's part of a lazy image: T/S fixed, read as (C, *spatial) in ZYX order."""

    def __init__(self, image: LazyImage, fixed: Mapping[str, int]) -> None:
        self.image = image
        self.fixed = dict(fixed)
        axes = image.axes
        self.spatial = "".join(a for a in SPATIAL if a in axes)
        self.shape = tuple(image.shape[axes.index(a)] for a in self.spatial)
        self.channels = image.shape[axes.index("C")] if "C" in axes else 1
        self._order = [axes.index(a) for a in ("C" * ("C" in axes) + self.spatial)]
        self._order += [i for i, a in enumerate(axes) if a in "TS"]

    @property
    def path(self) -> str:
        return self.image.path

    @property
    def voxel_size(self) -> tuple[float, ...] | None:
        size = self.image.voxel_size
        if size is None:
            return None
        stored = [a for a in self.image.axes if a in SPATIAL]
        return tuple(size[stored.index(a)] for a in self.spatial)

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray:
        """The pixels of ``region`` (one slice per spatial axis; None = all) as (C, *) float32."""
        by_letter = dict(
            zip(self.spatial, region or [slice(None)] * len(self.spatial), strict=True)
        )
        index = []
        for letter in self.image.axes:
            if letter in "TS":
                index.append(slice(self.fixed[letter], self.fixed[letter] + 1))
            else:
                index.append(by_letter.get(letter, slice(None)))
        block = self.image.read(tuple(index)).transpose(self._order)
        block = block.reshape(block.shape[: len(self.spatial) + ("C" in self.image.axes)])
        if "C" not in self.image.axes:
            block = block[None]
        return block.astype(np.float32, copy=False)

    def subsample(self, max_voxels: int) -> np.ndarray:
        """Every k-th plane (or row) so that about ``max_voxels`` are read: for statistics."""
        total = self.channels * math.prod(self.shape)
        step = max(1, math.ceil(total / max_voxels))
        return self.read([slice(None, None, step), *[slice(None)] * (len(self.shape) - 1)])


@dataclass
class Entry:
    """One training image: a pair's files, each restricted to one time point / scene."""

    pair: Pair
    image: View
    targets: dict[str, View]
    cost_map: View | None
    shape: tuple[int, ...]
    """Spatial shape after resampling."""
    zoom: tuple[float, ...] | None = None
    """Resampling factors per spatial axis, None when the voxel size already fits."""

    @property
    def name(self) -> str:
        where = ",".join(f"{a}={i}" for a, i in self.image.fixed.items())
        return f"{self.pair.name}[{where}]" if where else self.pair.name


def open_entries(
    pairs: Sequence[Pair], prep: Preparation, registry: ComponentRegistry | None = None
) -> tuple[list[Entry], list[str]]:
    """The entries of ``pairs``, and the problems of those that cannot be used (each naming files)."""
    entries: list[Entry] = []
    problems: list[str] = []
    for pair in pairs:
        found, trouble = _open_pair(pair, prep, registry)
        entries += found
        problems += trouble
    return entries, problems


def _open_pair(
    pair: Pair, prep: Preparation, registry: ComponentRegistry | None
) -> tuple[list[Entry], list[str]]:
    try:
        image = open_image(pair.image, axes=prep.axes, registry=registry)
    except UserError as exc:
        return [], [str(exc)]
    problems = _check_image(image, prep)
    others: dict[str, LazyImage] = {}
    roles = [*pair.targets.items(), *([("cost map", pair.cost_map)] if pair.cost_map else [])]
    for role, path in roles:
        try:
            others[role] = _open_like(path, image, registry)
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        return [], problems
    for role, other in others.items():
        problems += _check_companion(image, other, role, prep)
    zoom, problem = _zoom(image, prep)
    if problem:
        problems.append(problem)
    if problems:
        return [], problems
    entries = []
    stacked = [a for a in image.axes if a in "TS"]
    for position in itertools.product(*(range(image.shape[image.axes.index(a)]) for a in stacked)):
        fixed = dict(zip(stacked, position, strict=True))
        view = View(image, fixed)
        shape = (
            view.shape
            if zoom is None
            else tuple(round(n * z) for n, z in zip(view.shape, zoom, strict=True))
        )
        targets = {t: View(others[t], fixed) for t in pair.targets}
        cost_map = View(others["cost map"], fixed) if pair.cost_map else None
        entry = Entry(pair, view, targets, cost_map, shape, zoom)
        problem = _beyond_memory(entry, prep)
        if problem is not None:
            return [], [problem]
        entries.append(entry)
    return entries, []


def _beyond_memory(entry: Entry, prep: Preparation) -> str | None:
    """The problem of an entry training cannot hold: it reads each label of a label head whole
    (to find the labelled voxels), and everything whole when resampling (float32)."""
    voxels = math.prod(entry.shape)
    if entry.zoom is not None:
        why = "training resamples it, so it reads the image and its targets whole"
        problem = beyond_memory(entry.image.path, estimate_bytes(entry), why)
        return None if problem is None else f"{problem}; crop it or cut it into tiles"
    for head in prep.heads:
        if head.is_label and head.same_grid:
            view = entry.targets[head.target]
            why = "training reads each label image whole to find the labelled voxels"
            problem = beyond_memory(view.path, 4 * voxels * view.channels, why)
            if problem is not None:
                return f"{problem}; crop it or cut it into tiles"
    return None


def _open_like(path: Any, image: LazyImage, registry: ComponentRegistry | None) -> LazyImage:
    """A target or cost map, opened with the input's axes when its own metadata does not say.

    Label files rarely carry metadata; read with axes guessed from their shape alone, a label
    stack "TYX" would come out as "ZYX". The input's axes (without C) are the better guess.
    """
    other = open_image(path, registry=registry)
    if _non_channel(other.axes) == _non_channel(image.axes):
        return other
    for axes in (_non_channel(image.axes), image.axes):
        if len(axes) == len(other.shape):
            candidate = open_image(path, axes=axes, registry=registry)
            if _non_channel(candidate.axes) == _non_channel(image.axes):
                return candidate
    return other


def _non_channel(axes: str) -> str:
    return axes.replace("C", "")


def _check_image(image: LazyImage, prep: Preparation) -> list[str]:
    spatial = "".join(a for a in SPATIAL if a in image.axes)
    problems = []
    if len(spatial) != prep.spatial_dims:
        if getattr(image, "axes_in_file", False):
            # data.axes cannot relabel axes the file's metadata names.
            hint = (
                f" (the file's metadata names its axes, so data.axes cannot change them: use a "
                f"{len(spatial)}D preset, or save the planes as separate images)"
            )
        elif prep.spatial_dims == 2:
            hint = ' (set data.axes, e.g. "TYX", to train on its planes)'
        else:
            hint = ""
        problems.append(
            f"{image.path}: axes {image.axes} have {len(spatial)} spatial axes but data.patch_size "
            f"has {prep.spatial_dims}{hint}"
        )
    channels = image.shape[image.axes.index("C")] if "C" in image.axes else 1
    if channels != prep.in_channels:
        problems.append(
            f"{image.path}: has {channels} channel(s) (axes {image.axes}, shape {image.shape}) "
            f"but model.in_channels is {prep.in_channels}"
        )
    return problems


def _check_companion(image: LazyImage, other: LazyImage, role: str, prep: Preparation) -> list[str]:
    heads = [h for h in prep.heads if h.target == role]
    spatial = [a for a in SPATIAL if a in image.axes]
    dropped = "".join(set(spatial) - set(heads[0].kept(spatial))) if heads else ""
    factors = dict(zip(heads[0].kept(spatial), heads[0].scale, strict=False)) if heads else {}

    def sizes(lazy: LazyImage, skip: str, scaled: bool = False) -> dict[str, int]:
        return {
            a: n * (factors.get(a, 1) if scaled else 1)
            for a, n in zip(lazy.axes, lazy.shape, strict=True)
            if a not in "C" + skip
        }

    if sizes(other, "") != sizes(image, dropped, scaled=True):
        but = f" without {dropped} (head '{heads[0].head}' projects it away)" if dropped else ""
        if any(f > 1 for f in factors.values()):
            times = " x ".join(f"{f}{a}" for a, f in factors.items())
            but += f" times {times} (head '{heads[0].head}' upsamples)"
        return [
            f"{other.path} ({role}) has shape {_describe(other)} but its input image {image.path} "
            f"has {_describe(image)}{but}; they must match except for channels"
        ]
    channels = other.shape[other.axes.index("C")] if "C" in other.axes else 1
    expected = {"cost map": {1}}
    for head in heads:
        if head.task == "regression":
            expected[role] = {head.out_channels}
        else:
            # Several semantic classes come as one label image, or as one mask per class.
            expected[role] = {1, head.out_channels} if head.task == "semantic" else {1}
    if role in expected and channels not in expected[role]:
        what = "a cost map" if role == "cost map" else f"target '{role}'"
        needs = " or ".join(str(n) for n in sorted(expected[role]))
        return [f"{other.path}: has {channels} channel(s) but {what} needs {needs}"]
    return []


def _describe(lazy: LazyImage) -> str:
    return " x ".join(f"{n}{a}" for a, n in zip(lazy.axes, lazy.shape, strict=True))


def _zoom(image: LazyImage, prep: Preparation) -> tuple[tuple[float, ...] | None, str | None]:
    if prep.target_voxel_size is None:
        return None, None
    view = View(image, {a: 0 for a in image.axes if a in "TS"})
    size = view.voxel_size or (tuple(prep.voxel_size) if prep.voxel_size else None)
    if size is None or len(size) != len(prep.target_voxel_size):
        return None, (
            f"{image.path}: cannot resample to data.target_voxel_size {list(prep.target_voxel_size)}: "
            "its voxel size is unknown; set data.voxel_size"
        )
    zoom = tuple(s / t for s, t in zip(size, prep.target_voxel_size, strict=True))
    return (None if np.allclose(zoom, 1.0) else zoom), None


# ---------------------------------------------------------------------------------------------
# Loading


class ArraySource:
    """Patches of an array held in memory or memory-mapped."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def read(self, region: Sequence[slice]) -> np.ndarray:
        return np.array(self.array[(slice(None), *region)], dtype=np.float32)


@dataclass
class Prepared:
    """What is done to an array after reading: NaN policy, ignored value -> NaN, normalisation
    (with ``stats`` of the whole image when it is applied patch by patch)."""

    file: str
    nan_policy: Literal["error", "zero", "keep"]
    ignore_value: float | None = None
    normalize: Normalization | None = None
    stats: np.ndarray | None = None

    def clean(self, array: np.ndarray) -> np.ndarray:
        array = _finite(array, self.file, self.nan_policy)
        if self.ignore_value is not None:
            array[array == self.ignore_value] = np.nan
        return array

    def normalized(self, array: np.ndarray) -> np.ndarray:
        if self.normalize is None:
            return array
        if self.stats is None:
            return self.normalize(array)
        return self.normalize.apply(array, self.stats)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        return self.normalized(self.clean(array))


class LazySource:
    """Patches read from the file on demand and prepared one by one."""

    def __init__(self, view: View, prepare: Prepared) -> None:
        self.view = view
        self.prepare = prepare

    def read(self, region: Sequence[slice]) -> np.ndarray:
        return self.prepare(self.view.read(region))


Source = ArraySource | LazySource


@dataclass
class Foreground:
    """Flat indices of labelled voxels (subsampled), overall and per class."""

    labelled: np.ndarray
    classes: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class Volume:
    """An entry ready for patch drawing."""

    shape: tuple[int, ...]
    image: Source
    targets: dict[str, Source]
    """By head name."""
    cost_map: Source | None
    foreground: Foreground | None


def _finite(array: np.ndarray, file: str, policy: str) -> np.ndarray:
    if policy == "keep" or np.isfinite(array).all():
        return array
    if policy == "zero":
        return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    bad = int((~np.isfinite(array)).sum())
    raise UserError(
        f'{file}: {bad} NaN or Inf value(s) in the image; fix the file or set data.nan_policy = "zero"'
    )


def _resample(array: np.ndarray, zoom: tuple[float, ...] | None, order: int) -> np.ndarray:
    if zoom is None:
        return array
    from scipy.ndimage import zoom as scipy_zoom

    # grid_mode: pixels are areas, so the field of view is kept exactly.
    return scipy_zoom(array, (1.0, *zoom), order=order, mode="nearest", grid_mode=True).astype(
        np.float32
    )


def load_volume(entry: Entry, prep: Preparation, cache: ArrayCache, *, lazy: bool) -> Volume:
    """The entry's arrays: decoded whole through ``cache``, or (``lazy``) read per patch."""
    # Resampling needs the whole image, and so does a normalisation without separate statistics.
    normalizations = [prep.normalize, *(h.normalize for h in prep.heads if h.normalize is not None)]
    lazy = lazy and entry.zoom is None and all(hasattr(n, "statistics") for n in normalizations)
    common = {"entry": entry.image.fixed, "axes": prep.axes}

    def source(
        view: View, settings: dict[str, Any], prepared: Prepared, order: int, zoom: Any = entry.zoom
    ) -> Source:
        if lazy:
            if prepared.normalize is not None:
                whole = prepared.clean(view.subsample(LAZY_STATISTICS_VOXELS))
                prepared.stats = prepared.normalize.statistics(whole)
            return LazySource(view, prepared)

        def make() -> np.ndarray:
            # Ignored values become NaN before resampling, so that none is interpolated.
            array = _resample(prepared.clean(view.read()), zoom, order)
            return np.ascontiguousarray(prepared.normalized(array), dtype=np.float32)

        key = cache_key([view.path], {**common, "zoom": zoom, **settings})
        return ArraySource(cache.get(key, make))

    image = source(
        entry.image,
        {"role": "image", "normalize": prep.normalize_spec, "nan_policy": prep.nan_policy},
        Prepared(entry.image.path, prep.nan_policy, normalize=prep.normalize),
        order=1,
    )
    targets: dict[str, Source] = {}
    for head in prep.heads:
        view = entry.targets[head.target]
        zoom = None if entry.zoom is None else tuple(head.kept(entry.zoom))
        if head.is_label:
            prepared = Prepared(view.path, "keep")
            targets[head.head] = source(view, {"role": "label"}, prepared, order=0, zoom=zoom)
        else:
            settings = {
                "role": "regression",
                "normalize": head.normalize_spec,
                "ignore": head.ignore_value,
            }
            prepared = Prepared(view.path, "keep", head.ignore_value, head.normalize)
            targets[head.head] = source(view, settings, prepared, order=1, zoom=zoom)
    cost_map = None
    if entry.cost_map is not None:
        cost_map = source(
            entry.cost_map, {"role": "cost map"}, Prepared(entry.cost_map.path, "zero"), order=1
        )
    full = [slice(None)] * len(entry.shape)
    labels = {h.head: targets[h.head].read(full) for h in prep.heads if h.is_label and h.same_grid}
    foreground = _foreground(labels, prep)
    return Volume(entry.shape, image, targets, cost_map, foreground)


def _foreground(labels: Mapping[str, np.ndarray], prep: Preparation) -> Foreground | None:
    """Labelled voxels of the label heads in ``labels`` (value > 0, not ignored), for oversampling."""
    if not labels:
        return None
    labelled: np.ndarray | None = None
    classes: dict[int, np.ndarray] = {}
    for head in prep.heads:
        if head.head not in labels:
            continue
        label = labels[head.head]
        marked = label > 0
        if head.ignore_value is not None:
            marked &= label != head.ignore_value
        valid = np.asarray(marked.any(axis=0))
        labelled = valid if labelled is None else labelled | valid
        if not classes and head.task == "semantic" and head.out_channels > 1:
            if label.shape[0] > 1:  # one mask per class: class c + 1 is channel c
                classes = {
                    c + 1: _subsample(np.flatnonzero(m)) for c, m in enumerate(marked) if m.any()
                }
            else:
                values = label[0][valid]
                classes = {
                    int(c): _subsample(np.flatnonzero(valid & (label[0] == c)))
                    for c in np.unique(values)
                }
    assert labelled is not None
    return Foreground(_subsample(np.flatnonzero(labelled)), classes)


def _subsample(indices: np.ndarray) -> np.ndarray:
    if indices.size <= MAX_FOREGROUND:
        return indices
    # A fixed generator: the same voxels for the same image in every process and run.
    return np.sort(np.random.default_rng(0).choice(indices, MAX_FOREGROUND, replace=False))


def too_small(entries: Sequence[Entry], patch_size: Sequence[int], quoted: int = 5) -> str | None:
    """The problem of images smaller than the patch (when they may not be padded), or None."""
    small = [e for e in entries if any(n < p for n, p in zip(e.shape, patch_size, strict=True))]
    if not small:
        return None
    names = ", ".join(f"{e.image.path} ({'x'.join(map(str, e.shape))})" for e in small[:quoted])
    more = f" and {len(small) - quoted} more" if len(small) > quoted else ""
    return (
        f"{len(small)} image(s) are smaller than data.patch_size {list(patch_size)} and data.pad "
        f"is false: {names}{more}; set data.pad = true or a smaller patch size"
    )


def estimate_bytes(entry: Entry) -> int:
    """Bytes of the entry's decoded arrays (float32)."""
    voxels = math.prod(entry.shape)
    channels = (
        entry.image.channels
        + sum(v.channels for v in entry.targets.values())
        + (entry.cost_map is not None)
    )
    return 4 * voxels * channels
