"""Pick the registered reader or writer for a path, by file suffix or format name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from bioim2im.errors import UserError
from bioim2im.io.base import LazyImage, check_shape
from bioim2im.plugin.registry import Component, ComponentRegistry
from bioim2im.userfiles import check_regular


def open_image(
    path: str | os.PathLike[str],
    *,
    axes: str | None = None,
    level: int = 0,
    registry: ComponentRegistry | None = None,
) -> LazyImage:
    """Open an image lazily with the reader registered for its suffix.

    ``axes`` are used when the file's metadata does not name them; ``level`` picks a pyramid
    level (0 = full resolution). A path inside a ``.zarr`` container (``cells.ome.zarr/nuclei``)
    is opened by the zarr reader.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if not path.is_dir():
        # A FIFO would block the reader forever, a device never end.
        check_regular(path, "an image file")
    component = _by_suffix(path, _registry(registry), "reader", look_in_parents=True)
    options = _validated(component, path, {"axes": axes, "level": level})
    image: LazyImage = component.load()(path, **options)
    check_shape(path, image.shape, image.dtype)
    return image


def write_image(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    axes: str,
    voxel_size: Sequence[float] | None = None,
    is_label: bool = False,
    format: str | None = None,
    registry: ComponentRegistry | None = None,
    **options: Any,
) -> Path:
    """Write an image, atomically, with the writer for ``format`` or for the path's suffix.

    ``options`` are the writer's parameters, e.g. ``zarr_format``, ``compression``, ``chunks``
    and ``pyramid_levels`` for ``ome-zarr``, ``compression`` for ``tiff``.
    """
    path = Path(path)
    reg = _registry(registry)
    if format is None:
        component = _by_suffix(path, reg, "writer", look_in_parents=False)
    else:
        component = _by_format(format, reg)
    values = _validated(component, path, options)
    written: Path = component.load()(
        path, array, axes=axes, voxel_size=voxel_size, is_label=is_label, **values
    )
    return written


def _registry(registry: ComponentRegistry | None) -> ComponentRegistry:
    if registry is not None:
        return registry
    from bioim2im.plugin.manager import get_registry

    return get_registry()


def _by_suffix(
    path: Path, registry: ComponentRegistry, kind: str, *, look_in_parents: bool
) -> Component:
    candidates = [
        (suffix.lower(), component)
        for component in registry
        if component.kind == kind
        for suffix in component.extras.get("suffixes", ())
    ]
    for candidate in (path, *path.parents) if look_in_parents else (path,):
        name = candidate.name.lower()
        matches = [(len(suffix), c) for suffix, c in candidates if name.endswith(suffix)]
        if matches:
            # The longest suffix wins: ".ome.zarr" over ".zarr".
            return max(matches, key=lambda match: match[0])[1]
    known = ", ".join(sorted({suffix for suffix, _ in candidates})) or "none"
    verb = "read" if kind == "reader" else "written"
    raise UserError(f"{path}: unknown image file type; files that can be {verb}: {known}")


def _by_format(format: str, registry: ComponentRegistry) -> Component:
    writers = [c for c in registry if c.kind == "writer"]
    for component in writers:
        if component.extras.get("format", component.name) == format:
            return component
    known = ", ".join(sorted(c.extras.get("format", c.name) for c in writers)) or "none"
    raise UserError(f"unknown output format '{format}' (valid: {known})")


def _validated(component: Component, path: Path, options: dict[str, Any]) -> dict[str, Any]:
    try:
        return component.params.model_validate(options).model_dump()
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
        ]
        raise UserError(f"{path}: invalid options for {component.label}", problems) from exc
