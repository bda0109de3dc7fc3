"""OME-NGFF metadata: read and write ``multiscales`` (0.4 on zarr v2, 0.5 on zarr v3).

In 0.4 the metadata sits at the top of a group's attributes, each entry carrying its version;
in 0.5 it sits under ``attributes["ome"]`` with one ``version`` for all of it.

Space axes carry the unit ``micrometer`` only when the voxel size is known; a scale without a
unit is read back as "voxel size unknown", so ``None`` survives a round trip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bioim2im.errors import UserError
from bioim2im.io.base import micrometers, spatial_axes

_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_LETTER_OF_TYPE = {"time": "T", "channel": "C"}


def ome_attributes(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The NGFF part of a group's attributes, whatever the version."""
    ome = attrs.get("ome")
    return ome if isinstance(ome, Mapping) else attrs


def multiscales(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first multiscales entry of a group, or None when the group is not an image."""
    entries = ome_attributes(attrs).get("multiscales")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return None
    return entries[0]


TRANSFORMATION_TYPES = ("identity", "scale", "translation")


def checked_multiscales(location: str, attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first multiscales entry of a group, as :func:`multiscales`, once its metadata is
    known to be usable: a UserError naming ``location`` and the problem otherwise.

    Whatever a reader takes from it is then of the right kind: axes are a list of names or of
    tables with text ``name``, ``type`` and ``unit``; datasets a non-empty list of tables whose
    ``path`` stays inside the store; transformations ``identity``, ``scale`` or ``translation``
    with one finite number per axis, scales above 0.
    """
    entry = multiscales(attrs)
    if entry is None:
        return None
    problem = _problem(entry)
    if problem is not None:
        raise UserError(f"{location}: damaged OME-Zarr multiscales metadata: {problem}")
    return entry


def dataset_path(location: str, entry: Mapping[str, Any], level: int) -> str:
    """The path of pyramid level ``level`` of a :func:`checked_multiscales` entry, inside the
    store (without a trailing ``/``)."""
    path = str(entry["datasets"][level]["path"])
    return path[:-1] if path.endswith("/") else path


def inside_store(value: Any, container: str = "the store") -> str | None:
    """Why ``value`` is not a path inside a store (or another ``container``), or None: a path
    read from metadata must be relative, with no ``.`` or ``..`` segment and no scheme, drive
    or backslash, so that it cannot name another store or a file elsewhere."""
    if not isinstance(value, str) or not value:
        return f"{value!r} is not a path (a text such as '0' or 's0')"
    text = value[:-1] if value.endswith("/") else value
    parts = text.split("/")
    if (
        value.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or any(char in value for char in "\\\0:")
    ):
        return (
            f"the path {value!r} leads outside {container}: the paths it lists are relative, "
            "without '.', '..', '//', ':' or a leading '/'"
        )
    return None


def _problem(entry: Mapping[str, Any]) -> str | None:
    axes = entry.get("axes")
    if "axes" in entry:
        if not isinstance(axes, list):
            return f"'axes' must be a list, not {axes!r}"
        for axis in axes:
            if isinstance(axis, str):
                continue
            if not isinstance(axis, Mapping) or not isinstance(axis.get("name"), str):
                return f"axis {axis!r} must be a name or a table with a text 'name'"
            for key in ("type", "unit"):
                if key in axis and not isinstance(axis[key], str):
                    return f"axis {axis['name']!r}: '{key}' must be a text, not {axis[key]!r}"
    n_axes = len(axes) if axes else None
    datasets = entry.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        return f"'datasets' must be a non-empty list of levels, not {datasets!r}"
    for dataset in datasets:
        if not isinstance(dataset, Mapping):
            return f"dataset {dataset!r} must be a table with a 'path'"
        problem = inside_store(dataset.get("path"))
        if problem is not None:
            return f"dataset path: {problem}"
        problem = _transformations_problem(dataset, n_axes)
        if problem is not None:
            return f"dataset {dataset['path']!r}: {problem}"
    return _transformations_problem(entry, n_axes)


def _transformations_problem(table: Mapping[str, Any], n_axes: int | None) -> str | None:
    transforms = table.get("coordinateTransformations", [])
    if not isinstance(transforms, list):
        return f"'coordinateTransformations' must be a list, not {transforms!r}"
    for transform in transforms:
        kind = transform.get("type") if isinstance(transform, Mapping) else None
        if kind not in TRANSFORMATION_TYPES:
            return (
                f"transformation {transform!r}: 'type' must be one of "
                f"{', '.join(TRANSFORMATION_TYPES)}"
            )
        if kind == "identity":
            continue
        assert isinstance(transform, Mapping)
        if kind not in transform:
            # The values stored in an array of the store: only its path is checked here.
            if "path" not in transform:
                return f"the {kind} transformation has no '{kind}' (and no 'path')"
            problem = inside_store(transform["path"])
            if problem is not None:
                return f"{kind} path: {problem}"
            continue
        values = transform[kind]
        numbers = isinstance(values, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        )
        if not numbers or not values:
            return f"{kind} {values!r} must be a list of finite numbers, one per axis"
        if n_axes is not None and len(values) != n_axes:
            return f"{kind} {values!r} has {len(values)} numbers for the {n_axes} axes"
        if kind == "scale" and any(v <= 0 for v in values):
            return f"scale {values!r} must be above 0 along every axis"
    return None


def container_images(group: Any) -> dict[str, str] | None:
    """The images of a container of them (what ``bioim2im predict`` writes: one group per
    head, label images under ``labels/``), by name -> path inside it; None when ``group`` is
    an image of its own (a multiscales whose arrays are its own, not in a child group's).

    A container's top may show one of its images (``multiscales`` pointing into it), so that
    OME-Zarr readers open it; it is still a container."""
    entry = multiscales(group.attrs)
    if entry is not None:
        datasets = entry.get("datasets")
        first = datasets[0] if isinstance(datasets, list) and datasets else {}
        if "/" not in str(first.get("path", "") if isinstance(first, Mapping) else ""):
            return None
    found: dict[str, str] = {}
    for name, child in sorted(group.groups()):
        if multiscales(child.attrs) is not None:
            found[name] = name
        elif name == "labels":  # NGFF labels: label images of the container's image
            for label, image in sorted(child.groups()):
                if multiscales(image.attrs) is not None:
                    found.setdefault(label, f"labels/{label}")
    return found


def is_label(attrs: Mapping[str, Any]) -> bool:
    return "image-label" in ome_attributes(attrs)


def axes_letters(axes: Sequence[Any]) -> str | None:
    """Letters for NGFF axes (dicts in 0.4+, names in 0.3), or None if one has no letter."""
    letters = []
    for axis in axes:
        name = str(axis.get("name", "") if isinstance(axis, Mapping) else axis).upper()
        kind = axis.get("type") if isinstance(axis, Mapping) else None
        letter = name if name in _AXIS_TYPES else _LETTER_OF_TYPE.get(str(kind))
        if letter is None:
            return None
        letters.append(letter)
    return "".join(letters) if len(set(letters)) == len(letters) else None


def physical_sizes(entry: Mapping[str, Any], level: int) -> dict[str, float | None]:
    """Micrometers per pixel of a level, by axis letter, from scales and axis units."""
    axes = entry.get("axes", [])
    letters = axes_letters(axes)
    if letters is None:
        return {}
    scale = [1.0] * len(letters)
    transforms = [
        *entry["datasets"][level].get("coordinateTransformations", []),
        *entry.get("coordinateTransformations", []),
    ]
    for transform in transforms:
        if transform.get("type") == "scale":
            if "scale" not in transform:  # a scale stored in a separate array: not supported
                return {}
            scale = [s * f for s, f in zip(scale, transform["scale"], strict=True)]
    return {
        letter: micrometers(value, axis.get("unit") if isinstance(axis, Mapping) else None)
        for letter, value, axis in zip(letters, scale, axes, strict=True)
    }


def physical_origin(entry: Mapping[str, Any], level: int) -> dict[str, float]:
    """Micrometers from the origin to the centre of a level's first voxel, by spatial axis
    letter, from its scales and translations (the dataset's, then the image's, in order); empty
    when there is no translation or an axis has no unit."""
    axes = entry.get("axes", [])
    letters = axes_letters(axes)
    if letters is None:
        return {}
    scale, offset, moved = [1.0] * len(letters), [0.0] * len(letters), False
    transforms = [
        *entry["datasets"][level].get("coordinateTransformations", []),
        *entry.get("coordinateTransformations", []),
    ]
    for transform in transforms:
        kind = transform.get("type")
        if kind == "scale" and "scale" in transform:
            scale = [s * f for s, f in zip(scale, transform["scale"], strict=True)]
            offset = [o * f for o, f in zip(offset, transform["scale"], strict=True)]
        elif kind == "translation" and "translation" in transform:
            offset = [o + t for o, t in zip(offset, transform["translation"], strict=True)]
            moved = True
        elif kind != "identity":
            return {}
    if not moved:
        return {}
    found = {}
    for letter, value, axis in zip(letters, offset, axes, strict=True):
        if letter in "ZYX":
            converted = micrometers(value, axis.get("unit") if isinstance(axis, Mapping) else None)
            if converted is None:
                return {}
            found[letter] = converted
    return found


def origin_for(axes: str, offsets: Mapping[str, float]) -> tuple[float, ...] | None:
    """:func:`physical_origin`'s offsets in the order of ``axes``' spatial axes; None unless
    every spatial axis has one."""
    values = [offsets.get(a) for a in spatial_axes(axes)]
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None
    return tuple(float(v) for v in values)  # type: ignore[arg-type]


def image_attributes(
    *,
    axes: str,
    voxel_size: Sequence[float] | None,
    level_factors: Sequence[Sequence[int]],
    name: str,
    label: bool,
    zarr_format: int,
    origin: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The attributes of an image group with one dataset per level, ``"0"`` the finest.

    ``level_factors[k]`` is level k's downsampling factor along each axis relative to level 0.
    ``origin`` (micrometers per spatial axis, with a ``voxel_size``) is where level 0's first
    voxel centre lies: each level gets its translation (an averaged level's first voxel centre
    lies half its extra size further; a label level takes every other voxel from the first).
    """
    size = dict(zip(spatial_axes(axes), voxel_size or (), strict=False))
    start = dict(zip(spatial_axes(axes), origin or (), strict=False)) if voxel_size else {}
    axes_meta = []
    for letter in axes:
        axis = {"name": letter.lower(), "type": _AXIS_TYPES[letter]}
        if letter in size:
            axis["unit"] = "micrometer"
        axes_meta.append(axis)
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [
                {
                    "type": "scale",
                    "scale": [size.get(a, 1.0) * f for a, f in zip(axes, factors, strict=True)],
                },
                *(
                    [
                        {
                            "type": "translation",
                            "translation": [
                                start[a] + (0.0 if label else (f - 1) / 2 * size[a])
                                if a in start
                                else 0.0
                                for a, f in zip(axes, factors, strict=True)
                            ],
                        }
                    ]
                    if start
                    else []
                ),
            ],
        }
        for k, factors in enumerate(level_factors)
    ]
    entry: dict[str, Any] = {
        "name": name,
        "axes": axes_meta,
        "datasets": datasets,
        # Labels are downsampled by taking every other pixel, images by averaging.
        "type": "nearest" if label else "mean",
    }
    if zarr_format == 2:
        attrs: dict[str, Any] = {"multiscales": [{"version": "0.4", **entry}]}
        if label:
            attrs["image-label"] = {"version": "0.4"}
        return attrs
    ome: dict[str, Any] = {"version": "0.5", "multiscales": [entry]}
    if label:
        ome["image-label"] = {}
    return {"ome": ome}
