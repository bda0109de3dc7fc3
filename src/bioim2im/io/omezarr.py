"""Zarr arrays and OME-Zarr images: a lazy reader, a one-shot writer and a streaming writer.

Reading: an OME-Zarr image group (NGFF 0.4 on zarr v2, 0.5 on zarr v3) gives axes, pyramid
levels and voxel size; a plain zarr array gives axes through its v3 ``dimension_names`` or the
caller or the inference rule, and no voxel size.

Writing: one image per group, ``"0"`` the full resolution and ``"1"``, ``"2"``... optional
pyramid levels halved in Y and X (and in Z while Z is no coarser than Y), by averaging for
images and by taking every other pixel for labels. Output is built under a hidden partial name
and renamed when complete. :class:`OmeZarrStreamWriter` writes block by block and can resume an
interrupted run; one container may hold several images, e.g. one per prediction head, and
label images under ``labels/`` (NGFF labels of the container's image)::

    cells.ome.zarr/                <- OmeZarrStreamWriter("cells.ome.zarr")
        prob/0, prob/1             <- create_image("prob", ...)
        labels/nuclei/0, .../1     <- create_image("labels/nuclei", ..., is_label=True)

When finished, a container with no image of its own at the top *is* one for OME-Zarr readers
(napari-ome-zarr, ome-zarr-py, bioio, ome-zarr-models): its metadata is the first created
image's, with the paths of that image's arrays (``prob/0``, ...), or the first label image's
(as an image) when there is no other; and ``labels/`` lists the label images.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numcodecs
import numpy as np
import zarr
import zarr.codecs
from skimage.measure import block_reduce

from bioim2im.errors import UserError
from bioim2im.io import ngff
from bioim2im.io.atomic import partial_path, publish, remove
from bioim2im.io.base import (
    CANONICAL_ORDER,
    ArrayImage,
    check_axes,
    check_dtype,
    resolve_axes,
    spatial_axes,
    storage_order,
    voxel_size_for,
)

Compression = Literal["zstd", "gzip", "none"]
Region = tuple[slice, ...]
_GROUP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class ZarrImage(ArrayImage):
    """One zarr array (an OME-Zarr pyramid level or a plain array)."""

    def __init__(self, *args: Any, array_path: str) -> None:
        super().__init__(*args)
        self.array_path = array_path

    def _open(self) -> Any:
        return zarr.open_array(self.array_path, mode="r")


def open_zarr(
    path: str | os.PathLike[str], *, axes: str | None = None, level: int = 0
) -> ZarrImage:
    """Open an OME-Zarr image (at pyramid ``level``) or a plain zarr array, lazily."""
    try:
        node = zarr.open(path, mode="r")
    except PermissionError:
        raise
    except Exception as exc:  # zarr fails in many ways on damaged metadata (TypeError, ...)
        raise UserError(
            f"{path}: not a zarr array or OME-Zarr image, or its metadata is damaged "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    stored: str | None
    if isinstance(node, zarr.Group) and ngff.container_images(node):
        # What `predict` writes: which of its images is meant is not for us to guess (its top
        # shows the first one to OME-Zarr viewers).
        raise UserError(f"{path}: not one OME-Zarr image{_inside(node)}")
    if isinstance(node, zarr.Group):
        entry = ngff.checked_multiscales(os.fspath(path), node.attrs)
        if entry is None:
            raise UserError(
                f"{path}: not an OME-Zarr image (no multiscales metadata){_inside(node)}"
            )
        datasets = entry["datasets"]
        if not 0 <= level < len(datasets):
            raise UserError(
                f"{path}: pyramid level {level} requested but the image has {len(datasets)} "
                f"(0..{len(datasets) - 1})"
            )
        # The metadata's path stays inside the store (checked_multiscales made sure of it).
        array_path = os.path.join(path, ngff.dataset_path(os.fspath(path), entry, level))
        try:
            array = zarr.open_array(array_path, mode="r")
        except PermissionError:
            raise
        except Exception as exc:
            raise UserError(
                f"{array_path}: not a readable zarr array ({type(exc).__name__}: {exc})"
            ) from exc
        stored = ngff.axes_letters(entry.get("axes", []))
        sizes = ngff.physical_sizes(entry, level) if stored else {}
        origin = ngff.physical_origin(entry, level) if stored else {}
    else:
        if level != 0:
            raise UserError(f"{path}: a plain zarr array has no pyramid level {level}")
        array_path, array = os.fspath(path), node
        names = getattr(node.metadata, "dimension_names", None)
        stored = ngff.axes_letters(names) if names and all(names) else None
        sizes, origin = {}, {}
    check_dtype(path, array.dtype)
    if any(int(c) < 1 for c in array.chunks):
        raise UserError(f"{path}: damaged zarr metadata: chunk sizes {array.chunks} below 1")
    image_axes = resolve_axes(path, array.shape, stored=stored, given=axes)
    image = ZarrImage(
        path,
        array.shape,
        array.dtype,
        image_axes,
        voxel_size_for(image_axes, sizes),
        array_path=array_path,
    )
    image.axes_in_file = stored is not None
    if image.voxel_size is not None:
        image.origin = ngff.origin_for(image_axes, origin)
    return image


def _inside(group: zarr.Group) -> str:
    images = ngff.container_images(group) or {}
    if images:
        return f"; it holds the images {', '.join(sorted(images.values()))}: open one of them"
    arrays = sorted(group.array_keys())
    return f"; it holds the arrays {', '.join(arrays)}: open one of them" if arrays else ""


def is_zarr_container(path: Path) -> bool:
    """Whether ``path`` is a zarr group or array (v2 or v3), not just any folder."""
    return path.is_dir() and any((path / name).is_file() for name in ZARR_METADATA)


ZARR_METADATA = ("zarr.json", ".zgroup", ".zarray")


def write_ome_zarr(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    axes: str,
    voxel_size: Sequence[float] | None = None,
    is_label: bool = False,
    zarr_format: Literal[2, 3] = 2,
    compression: Compression = "zstd",
    chunks: Sequence[int] | None = None,
    pyramid_levels: int = 0,
) -> Path:
    """Write one image as OME-Zarr, atomically; axes are stored in OME order (``TCZYX``).

    A zarr image already at ``path`` is replaced; a folder that is not zarr is refused.

    ``chunks`` follow ``axes`` as given; default: 1 along T and C, up to 256 x 256 in 2D and
    32 x 128 x 128 in 3D.
    """
    path = Path(path)
    array = np.asarray(array)
    order, stored_axes, stored_voxel_size = storage_order(path, axes, array.ndim, voxel_size)
    array = np.transpose(array, order)
    if chunks is not None:
        if len(chunks) != array.ndim:
            raise UserError(f"{path}: chunks {tuple(chunks)} must have one size per axis of {axes}")
        chunks = tuple(chunks[i] for i in order)
    # An image written to the path of an existing zarr image replaces it, as a file would be;
    # any other folder there is refused when publishing.
    writer = OmeZarrStreamWriter(
        path,
        zarr_format=zarr_format,
        compression=compression,
        resume=False,
        replace=is_zarr_container(path),
    )
    try:
        image = writer.create_image(
            None,
            shape=array.shape,
            dtype=array.dtype,
            axes=stored_axes,
            voxel_size=stored_voxel_size,
            chunks=chunks,
            is_label=is_label,
        )
        image.write(tuple(slice(0, n) for n in array.shape), array)
        return writer.finalize(pyramid_levels)
    except BaseException:
        writer.discard()
        raise


class StreamedImage:
    """One image of an :class:`OmeZarrStreamWriter`, written region by region.

    Every region must start on a chunk boundary and end on one (or at the image's edge), so that
    writers in several processes never touch the same chunk. Completed regions are logged next to
    the data, so that a resumed run can skip them with :meth:`is_written`.
    """

    def __init__(
        self, array: zarr.Array, axes: str, log: Path, first_level: FirstLevel | None = None
    ) -> None:
        self._array = array
        self.axes = axes
        self._log = log
        self._first_level = first_level
        self._written = _logged(log)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._array.dtype)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self._array.chunks)

    def regions(self) -> Iterator[Region]:
        """Every chunk of the image as a region, in C order."""
        ranges = [range(0, n, c) for n, c in zip(self.shape, self.chunks, strict=True)]
        for starts in itertools.product(*ranges):
            yield tuple(
                slice(s, min(s + c, n))
                for s, c, n in zip(starts, self.chunks, self.shape, strict=True)
            )

    def is_written(self, region: Region) -> bool:
        """Whether ``region`` was written completely, by this run or an interrupted one."""
        return self._bounds(region) in self._written

    def write(self, region: Region, block: np.ndarray) -> None:
        """Store ``block`` (cast to the image's dtype) at ``region``."""
        bounds = self._bounds(region)
        block = np.asarray(block)
        expected = tuple(stop - start for start, stop in bounds)
        if tuple(block.shape) != expected:
            raise ValueError(
                f"block of shape {block.shape} does not fit region of shape {expected}"
            )
        for (start, stop), n, c in zip(bounds, self.shape, self.chunks, strict=True):
            if start % c or (stop % c and stop != n):
                raise ValueError(
                    f"region {region} is not aligned to the chunks {self.chunks}; "
                    "write whole chunks so parallel writers never share one"
                )
        block = block.astype(self.dtype, copy=False)
        self._array[tuple(slice(a, b) for a, b in bounds)] = block
        if self._first_level is not None:
            self._first_level.write(bounds, block)
        _log_region(self._log, bounds)
        self._written.add(bounds)

    def _bounds(self, region: Region) -> tuple[tuple[int, int], ...]:
        if len(region) != len(self.shape):
            raise ValueError(f"region {region} needs one slice per axis of {self.axes}")
        bounds = []
        for s, n in zip(region, self.shape, strict=True):
            start, stop, step = s.indices(n)
            if step != 1:
                raise ValueError(f"region {region} must use contiguous slices")
            bounds.append((start, stop))
        return tuple(bounds)


class FirstLevel:
    """The first pyramid level of a :class:`StreamedImage`, written with each region whose
    reduction fills whole chunks of it: the region's values are in memory then, where building
    the level when the image is finished reads the whole image back (1.1 s of a 4096² tile's
    11 s prediction went to reading and decompressing its five float32 channels).

    A region whose reduction would share a chunk with another region's (a region not aligned
    to twice the chunks along a halved axis) is left to :meth:`OmeZarrStreamWriter.finalize`,
    which rebuilds the level from the image unless every written region logged its level here,
    so that parallel writers never share a chunk of this level either.
    """

    def __init__(
        self,
        array: zarr.Array,
        shape: tuple[int, ...],
        factor: tuple[int, ...],
        nearest: bool,
        log: Path,
    ) -> None:
        self.array = array
        self.shape = shape
        """The full resolution's shape."""
        self.factor = factor
        self.nearest = nearest
        self.log = log

    def covers(self, bounds: tuple[tuple[int, int], ...]) -> bool:
        """Whether the reduction of the region ``bounds`` fills whole chunks of the level."""
        for (start, stop), n, f, c in zip(
            bounds, self.shape, self.factor, self.array.chunks, strict=True
        ):
            if start % (f * c) or (stop % (f * c) and stop != n):
                return False
        return True

    def write(self, bounds: tuple[tuple[int, int], ...], block: np.ndarray) -> None:
        if not self.covers(bounds):
            return
        region = tuple(
            slice(start // f, -(-stop // f))
            for (start, stop), f in zip(bounds, self.factor, strict=True)
        )
        self.array[region] = downsample(block, self.factor, nearest=self.nearest)
        _log_region(self.log, bounds)


def _log_region(log: Path, bounds: tuple[tuple[int, int], ...]) -> None:
    """Add the region ``bounds`` to a log of regions written (read by :func:`_logged`)."""
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(_format_region(bounds) + ";\n")


def _logged(log: Path) -> set[tuple[tuple[int, int], ...]]:
    """The regions a log lists as written."""
    written = set()
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.endswith(";"):  # a line cut short by a crash does not count
                written.add(_parse_region(line[:-1]))
    return written


def _format_region(bounds: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{a}:{b}" for a, b in bounds)


def _parse_region(text: str) -> tuple[tuple[int, int], ...]:
    return tuple((int(a), int(b)) for a, b in (part.split(":") for part in text.split(",")))


class OmeZarrStreamWriter:
    """Build an OME-Zarr container block by block, under a partial name until :meth:`finalize`.

    A container already at ``path`` is replaced at :meth:`finalize` only with ``replace=True``
    (an output the caller decided to overwrite); otherwise finishing refuses to delete it.

    The container is built in the hidden work directory ``.NAME.partial`` next to ``path``,
    which also logs the regions written. Opening a writer on a path whose work directory exists
    resumes it (``resume=True``): chunks already there are kept and
    :meth:`StreamedImage.is_written` tells which regions are done. ``resume=False`` starts over.
    Create the images from one process before other processes write to them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        zarr_format: Literal[2, 3] = 2,
        compression: Compression = "zstd",
        resume: bool = True,
        replace: bool = False,
    ) -> None:
        self.path = Path(path)
        self.replace = replace
        """An existing container at ``path`` is replaced when finished; otherwise it is refused."""
        self.partial = partial_path(self.path)
        self._container = self.partial / self.path.name
        self.zarr_format = zarr_format
        self.compression = compression
        if not resume:
            remove(self.partial)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._root = self._open_partial()
        self._created: list[str] = []
        """Names of the images, in the order they were created (or resumed)."""

    def _open_partial(self) -> zarr.Group:
        if self._container.exists():
            try:
                root = zarr.open_group(self._container, mode="r+")
            except (OSError, ValueError):
                # Interrupted before anything useful was written; its log cannot be trusted.
                remove(self.partial)
            else:
                if root.metadata.zarr_format != self.zarr_format:
                    raise UserError(
                        f"{self.partial}: an unfinished zarr v{root.metadata.zarr_format} output is "
                        f"here but zarr v{self.zarr_format} was asked for; delete it to start over"
                    )
                return root
        self.partial.mkdir(exist_ok=True)
        return zarr.open_group(self._container, mode="w-", zarr_format=self.zarr_format)

    def create_image(
        self,
        name: str | None,
        *,
        shape: Sequence[int],
        dtype: Any,
        axes: str,
        voxel_size: Sequence[float] | None = None,
        chunks: Sequence[int] | None = None,
        is_label: bool = False,
        origin: Sequence[float] | None = None,
        pyramid: bool = False,
    ) -> StreamedImage:
        """The image ``NAME/0`` (or ``0`` at the top when ``name`` is None), created or resumed.

        ``axes`` must be in OME order (a subsequence of ``TCZYX``). ``pyramid``: the image will
        be finished with pyramid levels, so its first level (``NAME/1``) is written with each
        region that fills whole chunks of it (:class:`FirstLevel`).
        """
        if name is not None and not (
            all(_GROUP_NAME.fullmatch(part) for part in name.split("/"))
            and (name.count("/") == 0 or (name.count("/") == 1 and name.startswith("labels/")))
        ):
            raise ValueError(
                f"image name {name!r}: use letters, digits, '_', '-' and '.' "
                "(after 'labels/' for a label image)"
            )
        where = self.path if name is None else self.path / name
        shape = tuple(int(n) for n in shape)
        dtype = check_dtype(where, np.dtype(dtype))
        axes = check_axes(where, axes, len(shape))
        _, stored_axes, voxel_size = storage_order(where, axes, len(shape), voxel_size)
        if origin is not None and len(origin) != len(spatial_axes(axes)):
            raise ValueError(f"origin {tuple(origin)}: one value per spatial axis of {axes}")
        if stored_axes != axes:
            raise ValueError(f"axes must be in the order {CANONICAL_ORDER}: got {axes}")
        chunks = tuple(
            min(int(c), n)
            for c, n in zip(chunks or default_chunks(shape, axes), shape, strict=True)
        )
        group = self._root if name is None else self._root.require_group(name)
        attrs = ngff.image_attributes(
            axes=axes,
            voxel_size=voxel_size,
            level_factors=[(1,) * len(shape)],
            name=name or self.path.name.split(".")[0],
            label=is_label,
            zarr_format=self.zarr_format,
            origin=origin,
        )
        if name is not None and name not in self._created:
            self._created.append(name)
        created = self.partial / f"created-{_file_name(name)}"
        wanted = _describe(shape, dtype, chunks, attrs)
        if "0" in group and not created.exists():
            array = _full_resolution(group)
            if _describe(array.shape, array.dtype, array.chunks, group.attrs) != wanted:
                # Its creation was interrupted (the disk filled up while its metadata was
                # written, say): nothing can have been written to it yet, so it starts again.
                del group["0"]
        if "0" in group:
            array = _full_resolution(group)
            found = _describe(array.shape, array.dtype, array.chunks, group.attrs)
            if found != wanted:
                raise UserError(
                    f"{self.partial}: the unfinished image '{name or '0'}' there is {found}, "
                    f"not {wanted} as now asked; delete it to start over"
                )
        else:
            array = group.create_array(
                "0",
                shape=shape,
                dtype=dtype,
                chunks=chunks,
                fill_value=0,
                **_array_options(self.zarr_format, self.compression, axes),
            )
            group.attrs.update(attrs)
        created.touch()
        return StreamedImage(
            array,
            axes,
            self.partial / f"written-{_file_name(name)}",
            self._first_level(group, name, array, axes, voxel_size, is_label) if pyramid else None,
        )

    def _first_level(
        self,
        group: zarr.Group,
        name: str | None,
        source: zarr.Array,
        axes: str,
        voxel_size: Sequence[float] | None,
        label: bool,
    ) -> FirstLevel | None:
        """The first pyramid level of ``group``'s image, created (or resumed) empty."""
        spatial = spatial_axes(axes)
        steps = dict(zip(spatial, voxel_size or (1.0,) * len(spatial), strict=True))
        factor = _level_factor(axes, tuple(source.shape), steps)
        if factor is None:
            return None
        shape = tuple(-(-n // f) for n, f in zip(source.shape, factor, strict=True))
        chunks = tuple(min(c, n) for c, n in zip(source.chunks, shape, strict=True))
        log = self.partial / f"level1-{_file_name(name)}"
        found = group.get("1")
        if not (
            isinstance(found, zarr.Array)
            and found.shape == shape
            and found.chunks == chunks
            and found.dtype == source.dtype
        ):
            remove(log)
            found = group.create_array(
                "1",
                shape=shape,
                dtype=source.dtype,
                chunks=chunks,
                fill_value=0,
                overwrite=True,
                **_array_options(self.zarr_format, self.compression, axes),
            )
        return FirstLevel(found, tuple(source.shape), factor, label, log)

    def finalize(self, pyramid_levels: int = 0) -> Path:
        """Add pyramid levels and their metadata to every image, then publish at ``path``."""
        for group in self._images():
            self._add_pyramid(group, pyramid_levels)
        self._describe_container()
        publish(self._container, self.path, replace_directory=self.replace)
        remove(self.partial)
        return self.path

    def discard(self) -> None:
        """Delete the unfinished output."""
        remove(self.partial)

    def _images(self) -> list[zarr.Group]:
        groups = [child for _, child in sorted(self._root.groups())]
        if "labels" in self._root and isinstance(self._root["labels"], zarr.Group):
            groups += [child for _, child in sorted(self._root["labels"].groups())]
        return [g for g in (self._root, *groups) if ngff.multiscales(g.attrs)]

    def _describe_container(self) -> None:
        """``labels/`` lists its label images; a top without an image of its own becomes one:
        the first created image's metadata, pointing into that image's group."""
        version = {} if self.zarr_format == 2 else {"version": "0.5"}
        labels = [n.split("/", 1)[1] for n in self._created if n.startswith("labels/")]
        if labels:
            listing = {**version, "labels": labels}
            attrs = listing if self.zarr_format == 2 else {"ome": listing}
            self._root["labels"].attrs.update(attrs)
        if ngff.multiscales(self._root.attrs) is not None or not self._created:
            return
        images = [n for n in self._created if not n.startswith("labels/")]
        name = (images or self._created)[0]
        group = self._root[name]
        entry = dict(ngff.multiscales(group.attrs) or {})
        entry["datasets"] = [
            {**dataset, "path": f"{name}/{dataset['path']}"} for dataset in entry["datasets"]
        ]
        ome = dict(ngff.ome_attributes(group.attrs))
        ome["multiscales"] = [entry]
        # An image even when it shows a label image (no other): napari-ome-zarr then adds
        # every label image once, over it.
        ome.pop("image-label", None)
        self._root.attrs.update(ome if self.zarr_format == 2 else {"ome": ome})

    def _add_pyramid(self, group: zarr.Group, levels: int) -> None:
        entry = ngff.multiscales(group.attrs)
        assert entry is not None
        axes = ngff.axes_letters(entry["axes"])
        assert axes is not None
        label = ngff.is_label(group.attrs)
        voxel_size = voxel_size_for(axes, ngff.physical_sizes(entry, 0))
        origin = ngff.origin_for(axes, ngff.physical_origin(entry, 0))
        step = dict(
            zip(spatial_axes(axes), voxel_size or (1.0,) * len(spatial_axes(axes)), strict=True)
        )
        source = _full_resolution(group)
        options = _array_options(self.zarr_format, self.compression, axes)
        factors = [(1,) * len(axes)]
        written = self._first_level_written(group, source) if levels else False
        if not levels and "1" in group:  # a first level written with the regions, not wanted
            del group["1"]
        for level in range(1, levels + 1):
            factor = _level_factor(axes, tuple(source.shape), step)
            if factor is None:
                break
            step = {a: s * factor[axes.index(a)] for a, s in step.items()}
            if level == 1 and written:
                found = group["1"]
                assert isinstance(found, zarr.Array)
                source = found
            else:
                source = _downsample_array(group, str(level), source, factor, label, options)
            factors.append(tuple(f * g for f, g in zip(factors[-1], factor, strict=True)))
        group.attrs.update(
            ngff.image_attributes(
                axes=axes,
                voxel_size=voxel_size,
                level_factors=factors,
                name=entry.get("name", ""),
                label=label,
                zarr_format=self.zarr_format,
                origin=origin,
            )
        )

    def _first_level_written(self, group: zarr.Group, source: zarr.Array) -> bool:
        """Whether every region written to ``group``'s image also wrote its first pyramid
        level (:class:`FirstLevel`), so that the level is complete."""
        name = group.path.removeprefix(self._root.path).strip("/") or None
        found = group.get("1")
        if not isinstance(found, zarr.Array) or found.dtype != source.dtype:
            return False
        regions = _logged(self.partial / f"written-{_file_name(name)}")
        return bool(regions) and regions <= _logged(self.partial / f"level1-{_file_name(name)}")


def _level_factor(
    axes: str, shape: tuple[int, ...], step: dict[str, float]
) -> tuple[int, ...] | None:
    """The factor of the next pyramid level of an image of ``shape`` and voxel size ``step``
    (per spatial axis): Y and X halved, and Z while it is no coarser than Y; None when Y or X
    is down to one voxel."""
    if min(shape[axes.index("Y")], shape[axes.index("X")]) < 2:
        return None
    halve = {"Y", "X"}
    if "Z" in axes and shape[axes.index("Z")] > 1 and step["Z"] <= step["Y"]:
        halve.add("Z")
    return tuple(2 if a in halve else 1 for a in axes)


def _file_name(name: str | None) -> str:
    """A file name for the image ``name`` in the work directory."""
    return "0" if name is None else name.replace("/", "--")


def _full_resolution(group: zarr.Group) -> zarr.Array:
    array = group["0"]
    if not isinstance(array, zarr.Array):
        raise UserError(f"{group.store_path}: '0' should be an array but is a group")
    return array


def _describe(shape: Sequence[int], dtype: Any, chunks: Sequence[int], attrs: Any) -> str:
    entry = ngff.multiscales(attrs) or {}
    axes = ngff.axes_letters(entry.get("axes", [])) or "?"
    return (
        f"{'a label' if ngff.is_label(attrs) else 'an image'} of shape {tuple(shape)}, "
        f"dtype {np.dtype(dtype)}, chunks {tuple(chunks)}, axes {axes}, "
        f"voxel size {voxel_size_for(axes, ngff.physical_sizes(entry, 0)) if entry else None}"
    )


def default_chunks(shape: Sequence[int], axes: str) -> tuple[int, ...]:
    """One T and C at a time; 256 x 256 in YX for 2D images, 32 x 128 x 128 for 3D."""
    spatial = 256 if "Z" not in axes else 128
    sizes = {"Z": 32, "Y": spatial, "X": spatial}
    return tuple(min(n, sizes.get(a, 1)) for n, a in zip(shape, axes, strict=True))


def _array_options(zarr_format: int, compression: Compression, axes: str) -> dict[str, Any]:
    if zarr_format == 2:
        codecs_v2 = {"zstd": numcodecs.Zstd(level=3), "gzip": numcodecs.GZip(level=5), "none": None}
        # NGFF 0.4 asks for "/"-separated chunk keys.
        return {
            "compressors": codecs_v2[compression],
            "chunk_key_encoding": {"name": "v2", "separator": "/"},
        }
    codecs_v3 = {
        "zstd": zarr.codecs.ZstdCodec(level=3),
        "gzip": zarr.codecs.GzipCodec(level=5),
        "none": None,
    }
    # NGFF 0.5 requires the arrays' dimension names to match the axes.
    return {"compressors": codecs_v3[compression], "dimension_names": [a.lower() for a in axes]}


def _downsample_array(
    group: zarr.Group,
    name: str,
    source: zarr.Array,
    factor: tuple[int, ...],
    nearest: bool,
    options: dict[str, Any],
) -> zarr.Array:
    """Create ``group[name]``, ``source`` reduced by ``factor``: runs of output chunks, each a
    task on as many threads as the process has cores (the levels of a 4096² five-channel
    float32 output took 3.1 s of a 19 s prediction one chunk at a time on one thread)."""
    shape = tuple(-(-n // f) for n, f in zip(source.shape, factor, strict=True))
    target = group.create_array(
        name,
        shape=shape,
        dtype=source.dtype,
        chunks=tuple(min(c, n) for c, n in zip(source.chunks, shape, strict=True)),
        fill_value=0,
        overwrite=True,
        **options,
    )
    # Each task a run of up to 16 chunks along the last axis: one read and one write of many
    # chunks costs far less than as many calls of one chunk each.
    steps = (*target.chunks[:-1], target.chunks[-1] * 16)
    ranges = [range(0, n, c) for n, c in zip(shape, steps, strict=True)]

    def reduce(starts: tuple[int, ...]) -> None:
        out = tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, steps, shape, strict=True))
        inp = tuple(
            slice(o.start * f, min(o.stop * f, n))
            for o, f, n in zip(out, factor, source.shape, strict=True)
        )
        target[out] = downsample(np.asarray(source[inp]), factor, nearest=nearest)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with ThreadPoolExecutor(max_workers=max(1, cores or 1)) as pool:
        for _ in pool.map(reduce, itertools.product(*ranges)):  # raises a task's error
            pass
    return target


def downsample(block: np.ndarray, factor: Sequence[int], *, nearest: bool) -> np.ndarray:
    """``block`` reduced by ``factor`` per axis: every other pixel, or the mean of each cell.

    Sizes that do not divide evenly are padded by repeating the edge, so that border pixels are
    averaged with themselves rather than with zeros.
    """
    if nearest or block.dtype == bool:
        return block[tuple(slice(None, None, f) for f in factor)]
    padding = [(0, -n % f) for n, f in zip(block.shape, factor, strict=True)]
    if any(after for _, after in padding):  # np.pad copies even when it adds nothing
        block = np.pad(block, padding, mode="edge")
    if block.dtype in (np.float32, np.float64) and set(factor) <= {1, 2}:
        return _halve(block, factor)
    mean = block_reduce(block, tuple(factor), np.mean)
    if block.dtype.kind in "iu":
        mean = np.rint(mean)
    return mean.astype(block.dtype)


def _halve(block: np.ndarray, factor: Sequence[int]) -> np.ndarray:
    """The mean of each 2 x 2 (x 2) cell of a float ``block`` (even along the halved axes): the
    two halves of each halved axis added in turn, about twelve times faster than
    ``block_reduce``'s mean over a view of the cells (0.07 against 0.88 s on one core for the
    first level of a 4096² five-channel output), the same values to a float's last bit or so."""
    total = block
    for axis, f in enumerate(factor):
        if f == 2:
            even = (slice(None),) * axis + (slice(0, None, 2),)
            odd = (slice(None),) * axis + (slice(1, None, 2),)
            total = total[even] + total[odd]
    return total * total.dtype.type(1 / 2 ** sum(f == 2 for f in factor))
