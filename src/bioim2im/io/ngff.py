"""OME-NGFF metadata: read and write ``multiscales`` (0.4 on zarr v2, 0.5 on zarr v3).

In 0.4 the metadata sits at the top of a group's attributes, each entry carrying its version;
in 0.5 it sits under ``attributes["ome"]`` with one ``version`` for all of it.

Space axes carry the unit ``micrometer`` only when the voxel size is known; a scale without a
unit is read back as "voxel size unknown", so ``None`` survives a round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


def image_attributes(
    *,
    axes: str,
    voxel_size: Sequence[float] | None,
    level_factors: Sequence[Sequence[int]],
    name: str,
    label: bool,
    zarr_format: int,
) -> dict[str, Any]:
    """The attributes of an image group with one dataset per level, ``"0"`` the finest.

    ``level_factors[k]`` is level k's downsampling factor along each axis relative to level 0.
    """
    size = dict(zip(spatial_axes(axes), voxel_size or (), strict=False))
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
                }
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
