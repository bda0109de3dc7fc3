"""bioim2im plugin: a ``reader`` on bioio for the file types of its installed format plugins.

Light at import and registration: which file types it takes comes from the installed bioio
plugins' package metadata; bioio itself is imported when a file is opened.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import Field

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import StrictModel

# File types of bioio's format plugins that bioim2im does not read itself (its own readers keep
# TIFF, OME-TIFF and OME-Zarr).
SUFFIXES: dict[str, tuple[str, ...]] = {
    "bioio-czi": (".czi",),
    "bioio-nd2": (".nd2",),
    "bioio-lif": (".lif",),
    "bioio-dv": (".dv", ".r3d"),
    "bioio-sldy": (".sldy",),
    "bioio-imageio": (".png", ".jpg", ".jpeg", ".bmp", ".gif"),
}


class BioioParams(StrictModel):
    """Options of the bioio reader."""

    axes: str | None = None
    """Ignored: bioio files name their axes."""
    level: int = Field(0, ge=0)
    """Resolution level of a pyramidal file; 0 is the full resolution."""


def installed_suffixes() -> tuple[str, ...]:
    """The file types of the bioio format plugins installed here."""
    names = {ep.name for ep in entry_points(group="bioio.readers")}
    names |= {ep.dist.name for ep in entry_points(group="bioio.readers") if ep.dist is not None}
    return tuple(s for name, suffixes in SUFFIXES.items() if name in names for s in suffixes)


def open_bioio(path: str | Path, *, axes: str | None = None, level: int = 0) -> Any:
    """Any file a bioio format plugin reads, lazily, with physical voxel sizes."""
    from bioim2im_bioio._reader import open_bioio as open_file

    return open_file(Path(path), level=level)


@hookimpl
def bioim2im_register_readers(registry: Any) -> None:
    registry.add(
        "bioio",
        open_bioio,
        "Files of the installed bioio format plugins (CZI, ND2, LIF...), lazily",
        params=BioioParams,
        suffixes=installed_suffixes(),
    )
