"""Where ``bioim2im predict`` writes: per input, one output per head, built in a hidden work
directory and published only when complete.

Layout in the output folder, for an input ``cells.tif`` and heads ``seg`` and ``dist``::

    cells.ome.zarr/seg/0, cells.ome.zarr/dist/0    (OME-Zarr, the default)
    cells_seg.tif, cells_dist.tif                  (--format tiff, OME-TIFF)
    predictions.csv                                (every input, head and output)

Each image is ``(T, C, Z, Y, X)`` without the axes the input lacks (C is always there).

The work directory (``.cells.ome.zarr.partial`` or ``.cells.tif.partial``) holds the
unfinished images, ``fingerprint.json`` (which command and settings it belongs to),
``progress/`` (finished blocks, one file per time point and process or part) and ``scratch/`` (values
between the pointwise and the neighbourhood postprocessing steps). A re-run with the same
fingerprint continues it; the work directory of other settings is never taken over silently.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bioim2im.io.atomic import atomic_file, partial_path, remove, write_text
from bioim2im.io.base import spatial_axes

Region = tuple[slice, ...]
FORMATS = ("ome-zarr", "tiff")
TABLE = "predictions.csv"


@dataclass(frozen=True)
class ImageSpec:
    """One head's output image for one input."""

    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype
    chunks: tuple[int, ...]
    voxel_size: tuple[float, ...] | None
    is_label: bool
    blockwise_channels: int | None
    """Channels of the values kept between pointwise and neighbourhood steps (None: no such
    steps, blocks are written directly)."""
    blockwise_dtype: np.dtype
    origin: tuple[float, ...] | None = None
    """Micrometers from the origin to the first voxel's centre per spatial axis (the input's
    translation, kept so that outputs overlay their input)."""

    @property
    def timed(self) -> bool:
        return self.axes.startswith("T")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.shape[-len(spatial_axes(self.axes)) :]

    @property
    def spatial_chunks(self) -> tuple[int, ...]:
        return self.chunks[-len(spatial_axes(self.axes)) :]

    def index(self, time_point: int, region: Region, channels: slice = slice(None)) -> Region:
        """Where ``region`` (spatial) of ``time_point`` lies in the image."""
        return ((slice(time_point, time_point + 1),) if self.timed else ()) + (channels, *region)


class Store(Protocol):
    """Receives one input's predictions, head by head, block by block."""

    def write(self, head: str, time_point: int, region: Region, values: np.ndarray) -> None:
        """Store final ``values`` (C, *region) of ``head``."""

    def write_blockwise(
        self, head: str, time_point: int, region: Region, values: np.ndarray
    ) -> None:
        """Keep pointwise-postprocessed ``values`` for the neighbourhood steps."""

    def blockwise(self, head: str, time_point: int) -> Any:
        """The kept values of ``head`` at ``time_point``: an array (C, *spatial)."""

    def labels(self, head: str, time_point: int) -> Any:
        """A new zeroed uint32 array (C, *spatial) to stitch ``head``'s labels into."""

    def finish(self) -> None:
        """Publish the outputs."""


# ---------------------------------------------------------------------------------------------
# Outputs of one input


def label_group(head: str) -> str:
    """Where a head written as a label image is in an OME-Zarr container (NGFF labels)."""
    return f"labels/{head}"


@dataclass(frozen=True)
class Outputs:
    """The files one input's predictions go to, and its work directory."""

    folder: Path
    stem: str
    heads: tuple[str, ...]
    format: str
    labels: tuple[str, ...] = ()
    """The heads written as label images (integer outputs): ``labels/<head>`` in OME-Zarr."""

    @property
    def container(self) -> Path:
        return self.folder / f"{self.stem}.ome.zarr"

    def path(self, head: str) -> Path:
        """Where ``head``'s image is (inside the container for OME-Zarr)."""
        if self.format == "tiff":
            return self.folder / f"{self.stem}_{head}.tif"
        return self.container / self.group(head)

    def group(self, head: str) -> str:
        """Where ``head``'s image is inside the OME-Zarr container."""
        return label_group(head) if head in self.labels else head

    @property
    def published(self) -> list[Path]:
        """The paths that appear when the outputs are complete."""
        if self.format == "tiff":
            return [self.path(head) for head in self.heads]
        return [self.container]

    @property
    def table_paths(self) -> list[Path]:
        """The paths ``predictions.csv`` lists for this input: one per head."""
        return [self.path(head) for head in self.heads]

    @property
    def work_dir(self) -> Path:
        if self.format == "tiff":
            return partial_path(self.folder / f"{self.stem}.tif")
        # The OME-Zarr stream writer's own work directory.
        return partial_path(self.container)

    def finished(self) -> list[Path]:
        """The published paths that exist."""
        return [p for p in self.published if p.exists()]

    def open_store(
        self, specs: Mapping[str, ImageSpec], *, zarr_format: int, pyramid_levels: int | str
    ) -> Store:
        """The store writing these outputs; the first call creates the images, later ones (other
        processes, resumed runs) open them."""
        if self.format == "tiff":
            return TiffStore(self, specs)
        return OmeZarrStore(self, specs, zarr_format=zarr_format, pyramid_levels=pyramid_levels)


_ZARR_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.partial$")
"""The name zarr's local store gives a file while writing it atomically."""


class WorkDir:
    """An input's work directory: which settings it belongs to and which blocks are done."""

    FINGERPRINT = "fingerprint.json"

    def __init__(self, path: Path) -> None:
        self.path = path

    def state(self, fingerprint: str) -> str:
        """``"new"`` (none), ``"same"`` (made with ``fingerprint``) or ``"other"``."""
        if not self.path.exists():
            return "new"
        record = self.path / self.FINGERPRINT
        try:
            found = json.loads(record.read_text(encoding="utf-8"))["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            return "other"
        return "same" if found == fingerprint else "other"

    def start(self, fingerprint: str, *, fresh: bool, alone: bool = True) -> None:
        """Create it (``fresh``: after deleting what is there), recording ``fingerprint`` first,
        so that nothing is ever in it without saying whose it is. ``alone``: no other process
        writes in it now (not so for one of several ``--part`` processes)."""
        if fresh:
            remove(self.path)
        elif alone and self.path.is_dir():
            # A process killed inside one of zarr's atomic writes leaves its temporary file
            # (``.zgroup.<uuid hex>.partial``): published with the rest, it made the output a
            # group that zarr warns about when listing its members.
            for leftover in self.path.rglob("*.partial"):
                if _ZARR_TEMPORARY.search(leftover.name) and leftover.is_file():
                    leftover.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        record = self.path / self.FINGERPRINT
        if not record.exists():
            with atomic_file(record) as partial:
                partial.write_text(json.dumps({"fingerprint": fingerprint}), encoding="utf-8")

    def progress_file(self, time_point: int, process: str) -> Path:
        """Where ``process`` (``rank0``, ``part2of8``...) records its finished blocks."""
        return self.path / "progress" / f"t{time_point:05d}-{process}.json"

    def progress_files(self, time_point: int) -> list[Path]:
        return sorted((self.path / "progress").glob(f"t{time_point:05d}-*.json"))


# ---------------------------------------------------------------------------------------------
# Stores


class _Scratch:
    """Blockwise values and label arrays as zarr arrays under ``folder``."""

    def __init__(self, folder: Path, specs: Mapping[str, ImageSpec]) -> None:
        import zarr

        self.folder = folder
        self.specs = specs
        self._arrays: dict[tuple[str, int], Any] = {}
        for head, spec in specs.items():
            if spec.blockwise_channels is None:
                continue
            for t in range(spec.shape[0] if spec.timed else 1):
                self._arrays[head, t] = zarr.open_array(
                    folder / f"{head}-t{t:05d}",
                    mode="a",
                    shape=(spec.blockwise_channels, *spec.spatial_shape),
                    dtype=spec.blockwise_dtype,
                    chunks=(1, *spec.spatial_chunks),
                    fill_value=0,
                )

    def write_blockwise(
        self, head: str, time_point: int, region: Region, values: np.ndarray
    ) -> None:
        self._arrays[head, time_point][(slice(None), *region)] = values

    def blockwise(self, head: str, time_point: int) -> Any:
        return self._arrays[head, time_point]

    def labels(self, head: str, time_point: int) -> Any:
        import zarr

        spec = self.specs[head]
        return zarr.create_array(
            self.folder / f"{head}-t{time_point:05d}-labels",
            shape=(spec.shape[spec.axes.index("C")], *spec.spatial_shape),
            dtype=np.uint32,
            chunks=(1, *spec.spatial_chunks),
            fill_value=0,
            overwrite=True,
        )


class OmeZarrStore(_Scratch):
    """``<stem>.ome.zarr`` with one NGFF image per head, through the OME-Zarr stream writer."""

    def __init__(
        self,
        outputs: Outputs,
        specs: Mapping[str, ImageSpec],
        *,
        zarr_format: int,
        pyramid_levels: int | str,
    ) -> None:
        from bioim2im.io import OmeZarrStreamWriter

        # Replacing an existing container was decided before (--overwrite, or our own output).
        self.writer = OmeZarrStreamWriter(
            outputs.container,
            zarr_format=zarr_format,  # type: ignore[arg-type]
            resume=True,
            replace=True,
        )
        self.pyramid_levels = (
            pyramid_levels if isinstance(pyramid_levels, int) else auto_pyramid_levels(specs)
        )
        self.images = {
            head: self.writer.create_image(
                label_group(head) if spec.is_label else head,
                shape=spec.shape,
                dtype=spec.dtype,
                axes=spec.axes,
                voxel_size=spec.voxel_size,
                chunks=spec.chunks,
                is_label=spec.is_label,
                origin=spec.origin,
                pyramid=self.pyramid_levels > 0,
            )
            for head, spec in specs.items()
        }
        super().__init__(self.writer.partial / "scratch", specs)

    def write(self, head: str, time_point: int, region: Region, values: np.ndarray) -> None:
        spec = self.specs[head]
        index = spec.index(time_point, region, slice(0, values.shape[0]))
        self.images[head].write(index, values[None] if spec.timed else values)

    def finish(self) -> None:
        self.writer.finalize(self.pyramid_levels)


AUTO_PYRAMID_EDGE = 1024
"""``pyramid_levels = "auto"`` halves the outputs until Y and X are at most this."""


def auto_pyramid_levels(specs: Mapping[str, ImageSpec]) -> int:
    """Levels that bring the largest output's Y and X to :data:`AUTO_PYRAMID_EDGE` or less."""
    edge = max(
        (
            n
            for spec in specs.values()
            for a, n in zip(spec.axes, spec.shape, strict=True)
            if a in "YX"
        ),
        default=0,
    )
    levels = 0
    while edge > AUTO_PYRAMID_EDGE:
        edge = -(-edge // 2)
        levels += 1
    return levels


class TiffStore(_Scratch):
    """One OME-TIFF per head, assembled in zarr arrays and written out plane by plane."""

    def __init__(self, outputs: Outputs, specs: Mapping[str, ImageSpec]) -> None:
        import zarr

        self.outputs = outputs
        folder = outputs.work_dir
        self.images = {
            head: zarr.open_array(
                folder / "images" / head,
                mode="a",
                shape=spec.shape,
                dtype=spec.dtype,
                chunks=spec.chunks,
                fill_value=0,
            )
            for head, spec in specs.items()
        }
        super().__init__(folder / "scratch", specs)

    def write(self, head: str, time_point: int, region: Region, values: np.ndarray) -> None:
        spec = self.specs[head]
        index = spec.index(time_point, region, slice(0, values.shape[0]))
        self.images[head][index] = values[None] if spec.timed else values

    def finish(self) -> None:
        for head, spec in self.specs.items():
            write_tiff_planes(self.outputs.path(head), self.images[head], spec)
        remove(self.outputs.work_dir)


class MemoryStore:
    """Predictions kept in memory (the Python API on an in-memory array)."""

    def __init__(self, specs: Mapping[str, ImageSpec]) -> None:
        self.specs = specs
        self.arrays = {head: np.zeros(spec.shape, spec.dtype) for head, spec in specs.items()}
        self._blockwise: dict[tuple[str, int], np.ndarray] = {}

    def write(self, head: str, time_point: int, region: Region, values: np.ndarray) -> None:
        spec = self.specs[head]
        index = spec.index(time_point, region, slice(0, values.shape[0]))
        self.arrays[head][index] = values[None] if spec.timed else values

    def write_blockwise(
        self, head: str, time_point: int, region: Region, values: np.ndarray
    ) -> None:
        spec = self.specs[head]
        if (head, time_point) not in self._blockwise:
            shape = (spec.blockwise_channels or 0, *spec.spatial_shape)
            self._blockwise[head, time_point] = np.zeros(shape, spec.blockwise_dtype)
        self._blockwise[head, time_point][(slice(None), *region)] = values

    def blockwise(self, head: str, time_point: int) -> np.ndarray:
        return self._blockwise[head, time_point]

    def labels(self, head: str, time_point: int) -> np.ndarray:
        spec = self.specs[head]
        return np.zeros((spec.shape[spec.axes.index("C")], *spec.spatial_shape), np.uint32)

    def finish(self) -> None:
        self._blockwise.clear()


def write_tiff_planes(path: Path, image: Any, spec: ImageSpec) -> None:
    """Write ``image`` (a zarr array in OME order) as an OME-TIFF, atomically, one YX plane in
    memory at a time."""
    import tifffile

    metadata: dict[str, Any] = {"axes": spec.axes}
    for letter, size in zip(spatial_axes(spec.axes), spec.voxel_size or (), strict=False):
        metadata[f"PhysicalSize{letter}"] = size
        metadata[f"PhysicalSize{letter}Unit"] = "µm"

    def planes() -> Iterator[np.ndarray]:
        for index in np.ndindex(*spec.shape[:-2]):
            yield np.asarray(image[index])

    with atomic_file(path) as partial, open(partial, "wb") as handle:
        tifffile.imwrite(
            handle,
            data=planes(),
            shape=spec.shape,
            dtype=spec.dtype,
            ome=True,
            photometric="minisblack",
            metadata=metadata,
            compression="zlib",
        )
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------
# The run: predictions.csv and the record of inputs already done


class RunRecord:
    """Which inputs a run of one command has finished, so that re-running it after an
    interruption takes their outputs as done instead of refusing them as existing."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.path = partial_path(folder / TABLE, "run")
        self.fingerprint = fingerprint
        self.done: set[str] = set()
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(record, dict) and record.get("fingerprint") == fingerprint:
            self.done = set(record.get("done", []))

    def mark_done(self, stem: str) -> None:
        self.done.add(stem)
        with atomic_file(self.path) as partial:
            record = {"fingerprint": self.fingerprint, "done": sorted(self.done)}
            partial.write_text(json.dumps(record), encoding="utf-8")

    def close(self) -> None:
        remove(self.path)


TABLE_COLUMNS = ["input", "head", "output", "axes", "shape", "dtype", "postprocess", "made_by"]
"""``postprocess`` is the head's postprocessing steps the output went through (JSON), which
`bioim2im postprocess` continues from; ``made_by`` identifies the model, settings and input that
made an output, so that running the same command again takes its outputs as done."""


def read_table(folder: Path) -> dict[str, str]:
    """``predictions.csv`` of an earlier run: output path (relative) -> its ``made_by``."""
    try:
        with (folder / TABLE).open(newline="", encoding="utf-8") as handle:
            return {row["output"]: row.get("made_by") or "" for row in csv.DictReader(handle)}
    except (OSError, UnicodeDecodeError, csv.Error, KeyError):
        return {}


def write_table(folder: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """``predictions.csv``: one row per input and head (:data:`TABLE_COLUMNS`), written
    atomically (left as it is when it already says the same)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=TABLE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    path = folder / TABLE
    write_text(path, text.getvalue())
    return path
