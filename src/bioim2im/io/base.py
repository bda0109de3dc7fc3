"""The lazy image every reader returns, and the axis, dtype and unit rules readers share.

Axes are letters from ``STCZYX``: S sample (independent images stacked), T time, C channel,
Z, Y, X space. When a file's metadata does not name its axes and the caller gives none, they are
inferred from the shape:

- 2D: ``YX``
- 3D: ``YXC`` when the last size is 3 or 4 and the first is larger (interleaved RGB/RGBA);
  ``CYX`` when the first size is at most 4 (a few channels); ``ZYX`` otherwise
- 4D: ``CZYX``
- 5D: ``TCZYX``

Anything else needs explicit axes.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bioim2im.errors import UserError

AXES_LETTERS = "STCZYX"
SPATIAL_LETTERS = "ZYX"
# Axes in the order OME-Zarr and OME-TIFF store them.
CANONICAL_ORDER = "TCZYX"

SUPPORTED_DTYPES: frozenset[np.dtype] = frozenset(
    np.dtype(name)
    for name in (
        "bool",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "float16",
        "float32",
        "float64",
    )
)

# Length units of OME-XML, OME-Zarr and ImageJ metadata, in micrometers.
_MICROMETERS_PER_UNIT = {
    "micrometer": 1.0,
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "\\u00b5m": 1.0,
    "nanometer": 1e-3,
    "nm": 1e-3,
    "millimeter": 1e3,
    "mm": 1e3,
    "centimeter": 1e4,
    "cm": 1e4,
    "meter": 1e6,
    "m": 1e6,
    "angstrom": 1e-4,
    "å": 1e-4,
}


# What decoding a damaged file raises (tifffile, imagecodecs, numcodecs, short reads).
# Decoding errors: imagecodecs raises RuntimeError subclasses, Python's zlib (used by tifffile
# when imagecodecs is not installed) raises zlib.error.
_UNREADABLE = (OSError, ValueError, RuntimeError, TypeError, ZeroDivisionError, zlib.error)


@runtime_checkable
class LazyImage(Protocol):
    """An image on disk whose pixels are read only when asked for, region by region."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    voxel_size: tuple[float, ...] | None
    """Physical size in micrometers of each spatial axis, in the order they appear in ``axes``."""

    @property
    def axes(self) -> str:
        """One letter from ``STCZYX`` per dimension, e.g. ``"CZYX"``."""
        ...

    def read(self, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """The pixels of ``region`` (one slice per axis; None = everything), in native byte order."""
        ...

    def close(self) -> None:
        """Release open files; a later ``read`` opens them again."""
        ...


class ArrayImage:
    """A LazyImage over an array-like opened on first read (a memmap or a zarr array).

    The opened array is cached per process and left out when pickled, so images can be handed to
    DataLoader workers: each worker opens its own file handles.
    """

    _array: Any = None
    _pid: int | None = None
    axes_in_file: bool = False
    """The file's metadata names its axes (then they win over any axes a caller gives)."""
    origin: tuple[float, ...] | None = None
    """Micrometers from the origin to the first voxel's centre per spatial axis (in the order
    of ``voxel_size``), when the file says (an OME-Zarr translation)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: Sequence[int],
        dtype: np.dtype,
        axes: str,
        voxel_size: tuple[float, ...] | None,
    ) -> None:
        self.path = str(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.axes = axes
        self.voxel_size = voxel_size

    def _open(self) -> Any:
        """The array to slice; subclasses open their file here."""
        raise NotImplementedError

    def _release(self) -> None:
        """Close whatever ``_open`` opened."""

    def read(self, region: tuple[slice, ...] | None = None) -> np.ndarray:
        if region is None:
            region = tuple(slice(None) for _ in self.shape)
        if len(region) != len(self.shape):
            raise ValueError(
                f"region {region} has {len(region)} entries but {self.path} has axes {self.axes}"
            )
        if self._pid != os.getpid():
            # A handle inherited through fork shares its file offset with the parent: reopen.
            self.close()
            self._array = self._open()
            self._pid = os.getpid()
        try:
            block = self._array[region]
        except _UNREADABLE as exc:
            raise UserError(
                f"cannot read {self.path}: the file is truncated or corrupt ({exc})"
            ) from exc
        # np.array copies, so no view into a memory map escapes.
        return np.array(block, dtype=self.dtype)

    def close(self) -> None:
        if self._array is not None:
            self._release()
        self._array = None
        self._pid = None

    def __enter__(self) -> ArrayImage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None
        state["_pid"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, shape={self.shape}, dtype={self.dtype}, "
            f"axes={self.axes!r}, voxel_size={self.voxel_size})"
        )


class InMemoryImage:
    """An array already in memory, seen as a :class:`LazyImage` (read by region).

    ``axes`` are resolved like a file's when first asked for (given, else inferred from the
    shape), so arrays whose axes nobody needs (block-wise prediction of a channel-first array)
    may have any number of dimensions.
    """

    def __init__(
        self,
        array: Any,
        *,
        axes: str | None = None,
        voxel_size: tuple[float, ...] | None = None,
        path: str = "the array",
    ) -> None:
        self.array = np.asarray(array)
        self.path = path
        self.shape = tuple(self.array.shape)
        self.dtype = self.array.dtype
        self.voxel_size = voxel_size
        self._axes = axes

    @property
    def axes(self) -> str:
        if self._axes is None or self._axes != self._axes.upper():
            self._axes = resolve_axes(self.path, self.shape, stored=None, given=self._axes)
        return self._axes

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """Positions of the spatial axes, in ZYX order."""
        return tuple(self.axes.index(a) for a in SPATIAL_LETTERS if a in self.axes)

    def read(self, region: tuple[slice, ...] | None = None) -> np.ndarray:
        # A copy, as a file's read gives: whoever reads may change it in place.
        return np.array(self.array if region is None else self.array[region])

    def close(self) -> None:
        """Nothing to release."""


def infer_axes(shape: Sequence[int]) -> str | None:
    """Axes guessed from the shape alone (the rule in this module's docstring), or None."""
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        if shape[-1] in (3, 4) and shape[0] > 4:
            return "YXC"
        return "CYX" if shape[0] <= 4 else "ZYX"
    return {4: "CZYX", 5: "TCZYX"}.get(len(shape))


def check_axes(path: str | os.PathLike[str], axes: str, ndim: int) -> str:
    """``axes`` upper-cased, or a UserError naming the file when they cannot describe it."""
    axes = axes.upper()
    problem = None
    if any(a not in AXES_LETTERS for a in axes):
        problem = f"use letters from {AXES_LETTERS}"
    elif len(set(axes)) != len(axes):
        problem = "each letter may appear once"
    elif "Y" not in axes or "X" not in axes:
        problem = "Y and X are required"
    elif len(axes) != ndim:
        problem = f"the image has {ndim} dimensions"
    if problem:
        raise UserError(f"{path}: axes '{axes}' are invalid: {problem}")
    return axes


def resolve_axes(
    path: str | os.PathLike[str], shape: Sequence[int], *, stored: str | None, given: str | None
) -> str:
    """The axes of an image: its metadata's, else the caller's, else inferred from the shape."""
    for axes in (stored, given):
        if axes is not None:
            return check_axes(path, axes, len(shape))
    inferred = infer_axes(shape)
    if inferred is None:
        raise UserError(
            f"{path}: cannot tell the axes of an image of shape {tuple(shape)}; "
            "give them explicitly, e.g. axes='TCZYX'"
        )
    return inferred


def spatial_axes(axes: str) -> str:
    """The spatial letters of ``axes``, in their order there (the order of ``voxel_size``)."""
    return "".join(a for a in axes if a in SPATIAL_LETTERS)


def voxel_size_for(axes: str, sizes: Mapping[str, float | None]) -> tuple[float, ...] | None:
    """``voxel_size`` from per-letter sizes; None unless every spatial axis has one."""
    values = [sizes.get(a) for a in spatial_axes(axes)]
    if any(v is None or not np.isfinite(v) or v <= 0 for v in values):
        return None
    return tuple(float(v) for v in values)  # type: ignore[arg-type]


def micrometers(value: float, unit: str | None) -> float | None:
    """``value`` in ``unit`` converted to micrometers; None for an unknown or missing unit."""
    if unit is None:
        return None
    factor = _MICROMETERS_PER_UNIT.get(unit.strip().lower())
    return None if factor is None else float(value) * factor


def check_dtype(path: str | os.PathLike[str], dtype: np.dtype) -> np.dtype:
    """``dtype`` when bioim2im can train on it, else a UserError naming the file."""
    dtype = np.dtype(dtype)
    try:
        native = dtype.newbyteorder("=")
    except (TypeError, ValueError):  # text, objects: numpy's newer dtypes have no byte order
        native = None
    if native not in SUPPORTED_DTYPES:
        supported = ", ".join(sorted(str(d) for d in SUPPORTED_DTYPES))
        kind = {"O": " (objects)", "T": " (text)", "U": " (text)", "S": " (bytes)"}.get(
            dtype.kind, " (records)" if dtype.fields else ""
        )
        raise UserError(
            f"{path}: pixel type {dtype}{kind} is not supported: images hold numbers "
            f"(supported: {supported})"
        )
    return dtype


MAX_ARRAY_BYTES = int(np.iinfo(np.intp).max)
"""The most bytes an array can span: sizes beyond it overflow every index and byte count."""


def check_shape(path: str | os.PathLike[str], shape: Sequence[int], dtype: np.dtype) -> None:
    """A UserError when ``shape`` cannot be an image's: a size below 0, or more bytes than any
    array can span (a damaged or hostile header claiming 2^40 x 2^40 pixels, say)."""
    sizes = [int(n) for n in shape]
    if any(n < 0 for n in sizes):
        raise UserError(
            f"{path}: damaged header: the image's shape {tuple(sizes)} has a size below 0"
        )
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        itemsize = 1
    nbytes = math.prod(sizes) * max(itemsize, 1)
    if nbytes > MAX_ARRAY_BYTES:
        shown = " x ".join(str(n) for n in sizes)
        raise UserError(
            f"{path}: its header claims {shown} pixels ({nbytes:.3g} bytes), more than any "
            f"file or memory can hold (at most {MAX_ARRAY_BYTES:.3g} bytes): the header is "
            "damaged or not an image's"
        )


def machine_memory() -> int | None:
    """Bytes of memory this machine has (None when the system does not say)."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def beyond_memory(path: str | os.PathLike[str], nbytes: int, why: str) -> str | None:
    """The problem of reading ``nbytes`` of ``path`` at once (``why``: who reads it whole) when
    they are more than the whole memory of the machine, or None."""
    memory = machine_memory()
    if memory is None or nbytes <= memory:
        return None
    return (
        f"{path}: {why}: {nbytes / 2**30:,.1f} GiB, more than this machine's "
        f"{memory / 2**30:,.1f} GiB of memory"
    )


def storage_order(
    path: str | os.PathLike[str], axes: str, ndim: int, voxel_size: Sequence[float] | None
) -> tuple[tuple[int, ...], str, tuple[float, ...] | None]:
    """How to store an image in OME order (``TCZYX``): (transpose order, axes, voxel size).

    ``voxel_size`` follows the spatial axes of ``axes`` and is reordered with them.
    """
    axes = check_axes(path, axes, ndim)
    if "S" in axes:
        raise UserError(
            f"{path}: OME files have no S (sample) axis; write each sample as its own image"
        )
    order = tuple(sorted(range(ndim), key=lambda i: CANONICAL_ORDER.index(axes[i])))
    stored = "".join(axes[i] for i in order)
    if voxel_size is None:
        return order, stored, None
    spatial = spatial_axes(axes)
    if len(voxel_size) != len(spatial) or any(not np.isfinite(v) or v <= 0 for v in voxel_size):
        raise UserError(
            f"{path}: voxel_size {tuple(voxel_size)} must be {len(spatial)} positive numbers, "
            f"one per spatial axis {spatial}"
        )
    by_letter = dict(zip(spatial, voxel_size, strict=True))
    return order, stored, tuple(float(by_letter[a]) for a in spatial_axes(stored))
