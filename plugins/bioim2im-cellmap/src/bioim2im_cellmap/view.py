"""``bioim2im cellmap view``: raw data, ground truth and predictions of a crop in neuroglancer.

Each path is opened as bioim2im opens any CellMap store (a zarr array with ``voxel_size`` and
``translation`` attributes, or an OME-NGFF multiscale group, whose finest level is shown; a crop
group shows each of its classes). Layers are served by the ``neuroglancer`` package's local
server, read lazily, in nanometres: each layer's voxel size is its own and its offset places
its voxels where they are (``translation`` is the centre of the first voxel, as everywhere in
bioim2im, so the offset in voxels is ``translation / voxel_size - 0.5``). The raw data is an
image layer, labels are segmentation layers (images when they hold floating-point values,
e.g. probabilities). The viewer's URL is printed; the server runs until Enter (or Ctrl-C).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioim2im.errors import UserError
from bioim2im.io import remote
from bioim2im.io.multiscale import Level, open_levels

AXES = ("z", "y", "x")


@dataclass
class Shown:
    """A running viewer: its URL and its layers (name -> the level shown)."""

    url: str
    layers: dict[str, Level]
    viewer: Any


class _Lazy:
    """A level as neuroglancer's LocalVolume reads it (shape, dtype, slicing)."""

    def __init__(self, level: Level) -> None:
        self.level = level
        self.shape = tuple(level.shape)
        self.dtype = np.dtype(level.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        region = index if isinstance(index, tuple) else (index,)
        return self.level.read(list(region))


def layers_of(path: str) -> dict[str, Level]:
    """The layers of ``path``: one per class of a crop group, else the array or multiscale
    group itself (its finest level)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    try:
        return {name: open_levels(path)[0]}
    except UserError as exc:
        children = _children(path)
        found = {}
        for child in children:
            try:
                found[f"{name}/{child}"] = open_levels(remote.join(path, child))[0]
            except UserError:
                continue
        if not found:
            raise UserError(
                f"{path}: neither a labelled array nor a crop of them ({exc})"
            ) from None
        return found


def _children(path: str) -> list[str]:
    """The names in the group ``path`` (a local folder needs no ``.zgroup``)."""
    if not remote.is_remote(path) and Path(path).is_dir():
        return sorted(p.name for p in Path(path).iterdir() if p.is_dir())
    import zarr

    try:
        node = remote.open_node(path)
    except UserError:
        return []
    if not isinstance(node, zarr.Group):
        return []
    return sorted([*node.array_keys(), *(n for n, _ in node.groups())])


def view(
    raw: str | None,
    labels: Sequence[str],
    *,
    bind: str = "127.0.0.1",
    port: int = 0,
    report: Callable[[str], None] | None = None,
) -> Shown:
    """Serve ``raw`` and ``labels`` in a neuroglancer viewer (see the module docstring)."""
    try:
        import neuroglancer
    except ImportError:
        raise UserError(
            "cellmap view needs the neuroglancer package: pip install 'bioim2im-cellmap[view]'"
        ) from None

    if raw is None and not labels:
        raise UserError("nothing to show: give --raw and/or label paths")
    shown: dict[str, tuple[Level, bool]] = {}
    if raw is not None:
        shown[str(raw).rstrip("/").rsplit("/", 1)[-1] or "raw"] = (open_levels(str(raw))[0], True)
    for path in labels:
        for name, level in layers_of(str(path)).items():
            shown[name] = (level, False)
    for level, _ in shown.values():
        if level.ndim != 3:
            raise UserError(f"{level.location}: {level.ndim} axes; the viewer shows z, y, x")
    neuroglancer.set_server_bind_address(bind, port)
    viewer = neuroglancer.Viewer()
    finest = min((lvl for lvl, _ in shown.values()), key=lambda lvl: float(np.prod(lvl.scale)))
    with viewer.txn() as state:
        state.dimensions = neuroglancer.CoordinateSpace(
            names=list(AXES), units="nm", scales=list(finest.scale)
        )
        for name, (level, is_raw) in shown.items():
            space = neuroglancer.CoordinateSpace(
                names=list(AXES), units="nm", scales=list(level.scale)
            )
            offset = np.asarray(level.translation) / np.asarray(level.scale) - 0.5
            image = is_raw or np.dtype(level.dtype).kind == "f"
            volume = neuroglancer.LocalVolume(
                _Lazy(level),
                dimensions=space,
                voxel_offset=[float(v) for v in offset],
                volume_type="image" if image else "segmentation",
            )
            layer = neuroglancer.ImageLayer if image else neuroglancer.SegmentationLayer
            state.layers[name] = layer(source=volume)
    url = str(viewer)
    if report is not None:
        report(url)
    return Shown(url, {name: level for name, (level, _) in shown.items()}, viewer)


def stop() -> None:
    import neuroglancer

    neuroglancer.stop()


__all__ = ["Shown", "layers_of", "stop", "view"]
