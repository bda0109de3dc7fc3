"""Built-in readers and writers. Light: the factories are imported only when a file is opened."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar, StrictModel

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
ZARR_SUFFIXES = (".zarr", ".ome.zarr")


class ReaderParams(StrictModel):
    """Options of the built-in readers."""

    axes: str | None = None
    """Axes of the file when its metadata does not name them, e.g. "CZYX"."""
    level: int = Field(0, ge=0)
    """Pyramid level to read; 0 is the full resolution."""


class OmeZarrWriterParams(StrictModel):
    """Options of the OME-Zarr writer."""

    zarr_format: Literal[2, 3] = 2
    """Zarr format version: 2 writes NGFF 0.4, 3 writes NGFF 0.5."""
    compression: Literal["zstd", "gzip", "none"] = "zstd"
    """Compression of the chunks."""
    chunks: tuple[int, ...] | None = None
    """Chunk size per axis; default: 1 along T and C, 256 x 256 (2D) or 32 x 128 x 128 (3D)."""
    pyramid_levels: int = Field(0, ge=0)
    """Extra levels, each halved in Y and X (and in Z while Z is no coarser than Y)."""


class TiffWriterParams(StrictModel):
    """Options of the OME-TIFF writer."""

    compression: Literal["zlib", "none"] = "zlib"
    """zlib writes compressed 256 x 256 tiles; none writes memory-mappable contiguous data."""


@hookimpl
def bioim2im_register_readers(registry: Registrar) -> None:
    registry.add(
        "tiff",
        "bioim2im.io.tiff:open_tiff",
        "TIFF and OME-TIFF through tifffile (lazy)",
        params=ReaderParams,
        suffixes=TIFF_SUFFIXES,
    )
    registry.add(
        "zarr",
        "bioim2im.io.omezarr:open_zarr",
        "OME-Zarr images (NGFF 0.4 and 0.5) and plain zarr v2/v3 arrays (lazy)",
        params=ReaderParams,
        suffixes=ZARR_SUFFIXES,
    )


@hookimpl
def bioim2im_register_writers(registry: Registrar) -> None:
    registry.add(
        "ome-zarr",
        "bioim2im.io.omezarr:write_ome_zarr",
        "OME-Zarr with optional pyramid levels, zarr v2 (NGFF 0.4) or v3 (NGFF 0.5)",
        params=OmeZarrWriterParams,
        suffixes=ZARR_SUFFIXES,
        format="ome-zarr",
    )
    registry.add(
        "tiff",
        "bioim2im.io.tiff:write_tiff",
        "OME-TIFF with axes and voxel size, optionally zlib-compressed",
        params=TiffWriterParams,
        suffixes=TIFF_SUFFIXES,
        format="tiff",
    )
