"""TIFF and OME-TIFF through tifffile, read lazily.

Uncompressed contiguous data is memory-mapped; compressed, tiled or scattered data is read
through tifffile's zarr store, which decodes only the tiles or strips a region touches.

Axes come from the file when tifffile can name all of them (OME-TIFF, ImageJ hyperstacks, RGB
samples, which become ``C``); otherwise from the caller, otherwise from the rule in
:mod:`bioim2im.io.base`. Axes of size 1 are dropped, as tifffile does: an OME-TIFF written as
``CYX`` with one channel reads back as ``YX``.

Writing always produces OME-TIFF (axes and physical voxel size in the OME-XML), uncompressed
and memory-mappable, or zlib-compressed in 256 x 256 tiles.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree

import numpy as np
import tifffile
import zarr

from bioim2im.errors import UserError
from bioim2im.io.atomic import atomic_file
from bioim2im.io.base import (
    ArrayImage,
    check_dtype,
    micrometers,
    resolve_axes,
    spatial_axes,
    storage_order,
    voxel_size_for,
)

TILE = 256


class TiffImage(ArrayImage):
    """One series (and pyramid level) of a TIFF file."""

    def __init__(self, *args: Any, level: int, memmappable: bool) -> None:
        super().__init__(*args)
        self.level = level
        self.memmappable = memmappable
        self._tif: tifffile.TiffFile | None = None

    def _open(self) -> Any:
        if self.memmappable:
            return tifffile.memmap(self.path, series=0, level=self.level, mode="r")
        self._tif = tifffile.TiffFile(self.path)
        return zarr.open_array(self._tif.aszarr(series=0, level=self.level), mode="r")

    def _release(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_tif": None}


def open_tiff(
    path: str | os.PathLike[str], *, axes: str | None = None, level: int = 0
) -> TiffImage:
    """Open the first series of a TIFF or OME-TIFF file without reading its pixels."""
    try:
        with _tifffile_errors() as errors, tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if level >= len(series.levels):
                raise UserError(
                    f"{path}: pyramid level {level} requested but the file has "
                    f"{len(series.levels)} (0..{len(series.levels) - 1})"
                )
            data = series.levels[level]
            memmappable = data.dataoffset is not None
            _check_complete(path, data, memmappable)
            stored = _named_axes(series.axes)
            sizes = _physical_sizes(tif)
            full_shape, shape, dtype = series.levels[0].shape, data.shape, data.dtype
    except UserError:
        raise
    except Exception as exc:  # tifffile raises many kinds of errors on malformed files
        raise UserError(
            f"{path}: not a readable TIFF file; it may be truncated or corrupt ({exc})"
        ) from exc
    if errors:
        raise UserError(f"{path}: the TIFF file is truncated or corrupt ({errors[0]})")
    check_dtype(path, dtype)
    image_axes = resolve_axes(path, shape, stored=stored, given=axes)
    # The metadata gives level 0's sizes; a coarser level's pixels are larger.
    level_sizes = {
        a: size * full_shape[i] / shape[i]
        for i, a in enumerate(image_axes)
        if (size := sizes.get(a)) is not None
    }
    image = TiffImage(
        path,
        shape,
        dtype,
        image_axes,
        voxel_size_for(image_axes, level_sizes),
        level=level,
        memmappable=memmappable,
    )
    image.axes_in_file = stored is not None
    return image


class _ErrorRecords(logging.Handler):
    # Only errors after which tifffile goes on with fewer pages, a lost OME-XML or another
    # series; other logged errors (an odd private tag) leave the pixels readable.
    SIGNS = ("offset", "series raised")

    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(sign in message for sign in self.SIGNS):
            self.records.append(message)


@contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    # tifffile logs broken page chains and tag offsets instead of raising: a truncated file
    # would silently get a wrong shape or lose its axes.
    records: list[str] = []
    handler = _ErrorRecords(records)
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _check_complete(path: str | os.PathLike[str], data: Any, contiguous: bool) -> None:
    size = os.path.getsize(path)
    if contiguous:
        end = data.dataoffset + data.nbytes
    else:
        last = data.pages[-1]
        if last is None:
            raise UserError(f"{path}: the TIFF file is truncated (pages are missing)")
        end = max(o + n for o, n in zip(last.dataoffsets, last.databytecounts, strict=True))
    if end > size:
        raise UserError(f"{path}: the TIFF file is truncated ({size} bytes, data needs {end})")


def _named_axes(tifffile_axes: str) -> str | None:
    """tifffile's axes in bioim2im letters, or None when some axis has no meaning (Q, I, ...)."""
    # tifffile's S are samples of a pixel (RGB): channels, unless the file has channels too.
    axes = tifffile_axes if "C" in tifffile_axes else tifffile_axes.replace("S", "C")
    if all(a in "TCZYX" for a in axes) and len(set(axes)) == len(axes):
        return axes
    return None


def _physical_sizes(tif: tifffile.TiffFile) -> dict[str, float | None]:
    """Micrometers per pixel along Z, Y, X from OME-XML or ImageJ metadata, when present."""
    if tif.is_ome and tif.ome_metadata:
        root = ElementTree.fromstring(tif.ome_metadata)
        pixels = next((e for e in root.iter() if e.tag.rpartition("}")[2] == "Pixels"), None)
        if pixels is None:
            return {}
        sizes: dict[str, float | None] = {}
        for letter in "ZYX":
            value = pixels.get(f"PhysicalSize{letter}")
            unit = pixels.get(f"PhysicalSize{letter}Unit", "µm")
            sizes[letter] = None if value is None else micrometers(float(value), unit)
        return sizes
    if tif.is_imagej and tif.imagej_metadata:
        meta = tif.imagej_metadata
        ij_unit: str | None = meta.get("unit")
        page = tif.pages.first
        sizes = {}
        for letter, tag in (("Y", "YResolution"), ("X", "XResolution")):
            resolution = page.tags.get(tag)
            if resolution is not None:
                pixels_per_unit, per = resolution.value
                sizes[letter] = (
                    micrometers(per / pixels_per_unit, ij_unit) if pixels_per_unit else None
                )
        if "spacing" in meta:
            sizes["Z"] = micrometers(float(meta["spacing"]), ij_unit)
        return sizes
    return {}


def write_tiff(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    axes: str,
    voxel_size: Sequence[float] | None = None,
    is_label: bool = False,
    compression: Literal["zlib", "none"] = "zlib",
) -> Path:
    """Write an OME-TIFF atomically: nothing appears at ``path`` until the file is complete.

    Axes are stored in OME order (``TCZYX``). TIFF has no notion of a label image, so
    ``is_label`` changes nothing. Pixel types OME-TIFF lacks are converted losslessly: float16 to
    float32, 64-bit integers to the smallest 32-bit type that holds their values.
    """
    path = Path(path)
    array = np.asarray(array)
    check_dtype(path, array.dtype)
    order, axes, voxel_size = storage_order(path, axes, array.ndim, voxel_size)
    array = _ome_pixel_type(path, np.transpose(array, order))
    metadata: dict[str, Any] = {"axes": axes}
    for letter, size in zip(spatial_axes(axes), voxel_size or (), strict=False):
        metadata[f"PhysicalSize{letter}"] = size
        metadata[f"PhysicalSize{letter}Unit"] = "µm"
    tiled = compression != "none" and min(array.shape[-2:]) >= TILE
    with atomic_file(path) as partial, open(partial, "wb") as fh:
        tifffile.imwrite(
            fh,
            array,
            ome=True,
            photometric="minisblack",
            metadata=metadata,
            compression=None if compression == "none" else compression,
            tile=(TILE, TILE) if tiled else None,
        )
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _ome_pixel_type(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for dtype in (np.uint32, np.int32):
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return array.astype(dtype)
        raise UserError(
            f"{path}: values {low}..{high} do not fit the 32-bit integers OME-TIFF stores; "
            "write OME-Zarr instead"
        )
    return array
