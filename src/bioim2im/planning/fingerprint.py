"""A dataset's fingerprint: what planning derives a preset from.

Shapes, voxel sizes (and so anisotropy), channels, intensity percentiles, the number of images
and, when there are labels, the objects: how many, how large along each axis, and the share of
the image they cover. Large images are read on an evenly strided subsample for the
intensities; labels are read whole (objects must be measured whole), one image at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bioim2im.data.sources import Pair
from bioim2im.data.volumes import View
from bioim2im.errors import UserError
from bioim2im.io import open_image

SAMPLE_VOXELS = 1 << 22
"""Voxels of each image read for its intensity statistics (an evenly strided subsample)."""
LABEL_VOXELS = 1 << 25
"""Label images with more voxels than this are measured on a central box of that many."""
MAX_IMAGES = 64
"""Images measured at most (evenly chosen); the rest only have their shapes read."""
PERCENTILES = (0.1, 1.0, 50.0, 99.0, 99.8, 99.9)


@dataclass
class Objects:
    """The labelled objects of a dataset's label images (instance ids, or the connected
    components of each class)."""

    count: int
    """Objects found in all the measured images."""
    per_image: float
    """Median number per image."""
    extent: dict[str, list[float]]
    """Per axis of (Z)YX, the 5th, 50th and 95th percentiles of the objects' bounding-box
    extents, in voxels."""
    volume: list[float]
    """The 5th, 50th and 95th percentiles of the objects' sizes, in voxels."""
    foreground: float
    """Share of the voxels that belong to an object."""
    touching: float
    """Share of objects sharing a border with another object."""


@dataclass
class Target:
    """A target folder's images (GT/, or another head's)."""

    name: str
    kind: str
    """"instance" (integer ids, many per image), "classes" (a few integer values), or
    "image" (real values)."""
    classes: int = 0
    """Distinct label values, background included (labels only)."""
    shape_ratio: list[float] = field(default_factory=list)
    """Target voxels per input voxel along each spatial axis (2 for super-resolution)."""
    projected: bool = False
    """The target has one spatial axis fewer than the input (a projection, e.g. MIP/)."""
    objects: Objects | None = None


@dataclass
class Fingerprint:
    """What planning knows about a dataset."""

    path: Path
    spatial_dims: int
    axes: str
    """The spatial axes, ``YX`` or ``ZYX``."""
    images: int
    """Training images (a file with T or S axes gives one per time point / scene)."""
    shapes: list[list[int]]
    """Spatial shape of every image."""
    median_shape: list[int]
    min_shape: list[int]
    channels: int
    dtype: str
    voxel_size: list[float] | None
    """Median voxel size per spatial axis; None when no file says and none was given."""
    voxel_size_source: str
    """Where the voxel size came from: "metadata", "given" or "unknown"."""
    voxel_sizes_differ: bool
    """Whether images have voxel sizes more than 10 % apart along some axis."""
    intensity: dict[str, float]
    """Percentiles (``p0.1`` ... ``p99.9``), ``mean`` and ``std`` of the input's values."""
    targets: dict[str, Target] = field(default_factory=dict)

    @property
    def anisotropy(self) -> float:
        """Largest over smallest voxel size (1 when unknown or 2D)."""
        if self.voxel_size is None:
            return 1.0
        return max(self.voxel_size) / min(self.voxel_size)

    @property
    def spacing(self) -> list[float]:
        """Voxel sizes relative to the finest axis (ones when unknown)."""
        if self.voxel_size is None:
            return [1.0] * self.spatial_dims
        finest = min(self.voxel_size)
        return [v / finest for v in self.voxel_size]

    @property
    def objects(self) -> Objects | None:
        """The objects of the first label target."""
        for target in self.targets.values():
            if target.objects is not None:
                return target.objects
        return None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["anisotropy"] = self.anisotropy
        return data


def measure(
    pairs: Sequence[Pair],
    path: Path,
    *,
    axes: str | None = None,
    voxel_size: Sequence[float] | None = None,
    registry: Any = None,
) -> Fingerprint:
    """The fingerprint of the images (and their targets) of ``pairs``."""
    if not pairs:
        raise UserError(f"{path}: no images found to plan from")
    chosen = _evenly(list(pairs), MAX_IMAGES)
    views: list[tuple[Pair, View]] = []
    shapes: list[list[int]] = []
    sizes: list[tuple[float, ...]] = []
    channels: set[int] = set()
    dtypes: set[str] = set()
    spatial: set[str] = set()
    for pair in pairs:
        image = open_image(pair.image, axes=axes, registry=registry)
        stacked = {a: 0 for a in image.axes if a in "TS"}
        count = math.prod(image.shape[image.axes.index(a)] for a in stacked) if stacked else 1
        view = View(image, stacked)
        spatial.add(view.spatial)
        shapes += [list(view.shape)] * count
        channels.add(view.channels)
        dtypes.add(str(image.dtype))
        if view.voxel_size is not None:
            sizes.append(view.voxel_size)
        if pair in chosen:
            views.append((pair, view))
    if len(spatial) > 1:
        raise UserError(
            f"{path}: images have different spatial axes ({', '.join(sorted(spatial))}); plan "
            "from images of one kind"
        )
    (axes_found,) = spatial
    dims = len(axes_found)
    if dims not in (2, 3):
        raise UserError(
            f"{path}: images have {dims} spatial axes ({axes_found}); bioim2im trains 2D (YX) or "
            "3D (ZYX) images (give --axes when the files do not name theirs)"
        )
    if len(channels) > 1:
        raise UserError(f"{path}: images have different numbers of channels {sorted(channels)}")
    size, source, differ = _voxel_size(sizes, voxel_size, len(pairs), dims)
    values = np.concatenate([v.subsample(SAMPLE_VOXELS // len(views)).ravel() for _, v in views])
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise UserError(f"{path}: the images hold no finite values")
    intensity = {
        f"p{p:g}": float(v)
        for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True)
    }
    intensity["mean"] = float(values.mean())
    intensity["std"] = float(values.std())
    found = Fingerprint(
        path=path,
        spatial_dims=dims,
        axes=axes_found,
        images=len(shapes),
        shapes=shapes,
        median_shape=[int(v) for v in np.median(np.array(shapes), axis=0)],
        min_shape=[int(v) for v in np.min(np.array(shapes), axis=0)],
        channels=channels.pop(),
        dtype=sorted(dtypes)[0],
        voxel_size=size,
        voxel_size_source=source,
        voxel_sizes_differ=differ,
        intensity=intensity,
    )
    for name in pairs[0].targets:
        found.targets[name] = _target(name, views, registry)
    return found


def _evenly(items: list[Pair], most: int) -> list[Pair]:
    if len(items) <= most:
        return items
    return [items[round(i * (len(items) - 1) / (most - 1))] for i in range(most)]


def _voxel_size(
    sizes: list[tuple[float, ...]], given: Sequence[float] | None, files: int, dims: int
) -> tuple[list[float] | None, str, bool]:
    if given is not None:
        if len(given) != dims or any(not v > 0 for v in given):
            raise UserError(
                f"voxel size {list(given)} must be {dims} positive numbers "
                f"({'ZYX' if dims == 3 else 'YX'})"
            )
        return [float(v) for v in given], "given", False
    usable = [s for s in sizes if len(s) == dims and all(v > 0 for v in s)]
    if not usable or len(usable) < files:
        return None, "unknown", False
    array = np.array(usable, dtype=np.float64)
    median = np.median(array, axis=0)
    differ = bool(np.any(array.max(axis=0) > 1.1 * array.min(axis=0)))
    return [float(v) for v in median], "metadata", differ


def _target(name: str, views: list[tuple[Pair, View]], registry: Any) -> Target:
    """What a target folder holds, measured on the chosen images."""
    label_images: list[np.ndarray] = []
    ratios: list[list[float]] = []
    projected = False
    integer = True
    distinct: set[int] = set()
    for pair, view in views:
        image = open_image(pair.targets[name], registry=registry)
        target = View(image, {a: 0 for a in image.axes if a in "TS"})
        if len(target.shape) < len(view.shape):
            projected = True
        else:
            ratios.append([t / v for t, v in zip(target.shape, view.shape, strict=True)])
        integer = integer and np.issubdtype(image.dtype, np.integer)
        if integer:
            labels = target.read(_central_box(target.shape, LABEL_VOXELS))[0]
            label_images.append(labels)
            if len(distinct) <= 256:
                distinct |= set(np.unique(labels[:: max(1, labels.shape[0] // 8)]).tolist())
    shape_ratio = [float(v) for v in np.median(np.array(ratios), axis=0)] if ratios else []
    if not integer or not label_images:
        return Target(name, "image", shape_ratio=shape_ratio, projected=projected)
    objects = _objects(label_images)
    # Many ids per image, each one object: instances. A few values shared by many separate
    # pieces: classes.
    instance = (
        objects.per_image > 0 and max(distinct) >= 0.8 * objects.per_image and len(distinct) > 4
    )
    kind = "instance" if instance else "classes"
    return Target(
        name,
        kind,
        classes=int(max(distinct)) + 1,
        shape_ratio=shape_ratio,
        projected=projected,
        objects=objects,
    )


def _central_box(shape: Sequence[int], most: int) -> list[slice]:
    """The central box of ``shape`` with at most ``most`` voxels, as alike in each axis's
    share as the image allows."""
    scale = min(1.0, (most / math.prod(shape)) ** (1 / len(shape)))
    sizes = [max(1, int(n * scale)) for n in shape]
    return [slice((n - k) // 2, (n - k) // 2 + k) for n, k in zip(shape, sizes, strict=True)]


def _objects(images: list[np.ndarray]) -> Objects:
    """Objects of label images: each id's connected pieces taken as one object (ids are
    instances), or, where ids repeat across separate pieces, each piece (classes)."""
    from scipy import ndimage

    extents: list[list[int]] = []
    volumes: list[int] = []
    counts: list[int] = []
    foreground: list[float] = []
    touching = 0
    for labels in images:
        labels = labels.astype(np.int64, copy=False)
        ids = np.unique(labels)
        ids = ids[ids > 0]
        foreground.append(float((labels > 0).mean()))
        many = ids.size > 4
        if many:
            objects = labels
        else:  # a few classes: their connected pieces are the objects
            objects, _ = ndimage.label(labels > 0)
        boxes = ndimage.find_objects(objects)
        sizes = np.bincount(objects.ravel())
        found = 0
        for number, box in enumerate(boxes, start=1):
            if box is None:
                continue
            found += 1
            extents.append([s.stop - s.start for s in box])
            volumes.append(int(sizes[number]))
        counts.append(found)
        if many:
            touching += _touching(labels)
    total = sum(counts)
    dims = images[0].ndim
    axes = "ZYX"[-dims:]
    if total == 0:
        return Objects(0, 0.0, {a: [0.0, 0.0, 0.0] for a in axes}, [0.0, 0.0, 0.0], 0.0, 0.0)
    quantiles = (5, 50, 95)
    extent = np.array(extents, dtype=np.float64)
    return Objects(
        count=total,
        per_image=float(np.median(counts)),
        extent={
            a: [float(v) for v in np.percentile(extent[:, i], quantiles)]
            for i, a in enumerate(axes)
        },
        volume=[float(v) for v in np.percentile(volumes, quantiles)],
        foreground=float(np.mean(foreground)),
        touching=touching / total,
    )


def _touching(labels: np.ndarray) -> int:
    """Objects that share a face with an object of another id."""
    touching: set[int] = set()
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)
        first, second = a[:-1], a[1:]
        border = (first != second) & (first > 0) & (second > 0)
        touching |= set(np.unique(first[border]).tolist()) | set(np.unique(second[border]).tolist())
    return len(touching)
