"""The challenge's test crops: ``test_crop_manifest.csv``, one row per crop and class.

    crop_name,dataset,class_label,voxel_size,translation,shape
    557,jrc_ctl-id8-1,perox_mem,[1.74;2.0;2.0],[23837.13;7599.0;35999.0],[600;600;600]

Voxel size and translation are in nm (Z Y X; the translation is the centre of the crop's first
voxel), the shape in voxels. A submission holds ``crop<N>/<class>`` for each row, on that grid.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bioim2im.errors import UserError
from bioim2im.userfiles import MAX_TABLE_BYTES, read_text

HEADER = ("crop_name", "dataset", "class_label", "voxel_size", "translation", "shape")


@dataclass(frozen=True)
class TestCrop:
    """One class of one test crop, and the grid it is scored on."""

    __test__ = False  # not a pytest test class, whatever its name

    id: int
    dataset: str
    label: str
    voxel_size: tuple[float, ...]
    translation: tuple[float, ...]
    shape: tuple[int, ...]

    @property
    def crop(self) -> str:
        """The crop's group name in a submission: ``crop<N>``."""
        return f"crop{self.id}"


def read_manifest(path: str | Path) -> list[TestCrop]:
    """The rows of a test-crop manifest, or a UserError listing every malformed line."""
    path = Path(path)
    try:
        text = read_text(path, what="crop manifest", limit=MAX_TABLE_BYTES)
    except OSError as exc:
        raise UserError(f"cannot read the crop manifest {path}: {exc.strerror or exc}") from None
    lines = list(csv.reader(io.StringIO(text)))
    if not lines or tuple(c.strip() for c in lines[0]) != HEADER:
        raise UserError(
            f"{path} is not a CellMap test-crop manifest: its first line must be {','.join(HEADER)}"
        )
    crops, problems = [], []
    for number, fields in enumerate(lines[1:], start=2):
        if not fields:
            continue
        try:
            crops.append(_row(fields))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise UserError(f"{path} has malformed rows:", problems[:20])
    if not crops:
        raise UserError(f"{path}: the manifest lists no crop")
    return crops


def _row(fields: Sequence[str]) -> TestCrop:
    if len(fields) != len(HEADER):
        raise ValueError(f"expected {len(HEADER)} fields, got {len(fields)}")
    crop, dataset, label, voxel_size, translation, shape = (f.strip() for f in fields)
    crop = crop.removeprefix("crop")
    sizes, offset, extent = (
        _numbers(v, name)
        for v, name in ((voxel_size, "voxel_size"), (translation, "translation"), (shape, "shape"))
    )
    if (
        not len(sizes) == len(offset) == len(extent)
        or any(s <= 0 for s in sizes)
        or any(n < 1 for n in extent)
    ):
        raise ValueError("voxel_size, translation and shape need one positive value per axis")
    if any(n != int(n) for n in extent):
        raise ValueError(f"shape {extent} must be whole numbers")
    return TestCrop(
        int(crop), dataset, label, tuple(sizes), tuple(offset), tuple(int(n) for n in extent)
    )


def _numbers(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.strip("[]").split(";")]
    except ValueError:
        raise ValueError(f"{name} '{text}' must look like [8.0;8.0;8.0]") from None


def format_manifest(crops: Sequence[TestCrop]) -> str:
    def listed(values: Sequence[float]) -> str:
        return "[" + ";".join(repr(v) if isinstance(v, float) else str(v) for v in values) + "]"

    rows = [",".join(HEADER)]
    for c in crops:
        rows.append(
            ",".join(
                [
                    str(c.id),
                    c.dataset,
                    c.label,
                    listed(c.voxel_size),
                    listed(c.translation),
                    listed(c.shape),
                ]
            )
        )
    return "\n".join(rows) + "\n"


def by_crop(crops: Sequence[TestCrop]) -> dict[int, list[TestCrop]]:
    """The manifest's rows grouped by crop id, in order."""
    grouped: dict[int, list[TestCrop]] = {}
    for crop in crops:
        grouped.setdefault(crop.id, []).append(crop)
    return grouped
