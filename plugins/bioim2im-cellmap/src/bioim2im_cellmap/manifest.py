"""The challenge's test crops: ``test_crop_manifest.csv``, one row per crop and class.

    crop_name,dataset,class_label,voxel_size,translation,shape
    557,jrc_ctl-id8-1,perox_mem,[1.74;2.0;2.0],[23837.13;7599.0;35999.0],[600;600;600]

Voxel size and translation are in nm (Z Y X; the translation is the centre of the crop's first
voxel), the shape in voxels. A submission holds ``crop<N>/<class>`` for each row, on that grid.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bioim2im.errors import UserError
from bioim2im.userfiles import MAX_TABLE_BYTES, read_bytes

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


# Crop and class names become zarr paths (``crop<N>/<class>``) of what is written: one path
# component each, of the characters CellMap names use.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", re.ASCII)
_CROP = re.compile(r"(?:crop)?([0-9]{1,9})", re.ASCII)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
AXES = 3
"""A test crop is a volume: three values (Z;Y;X) per list."""
MAX_SIDE = 2**20
"""Voxels along one axis of a crop, at most (whole CellMap datasets are about 2**14)."""


def read_manifest(path: str | Path) -> list[TestCrop]:
    """The rows of a test-crop manifest, or a UserError naming the file and, for each malformed
    row, its line and column."""
    path = Path(path)
    lines = csv_rows(path, "crop manifest")
    if not lines or tuple(c.strip() for c in lines[0][1]) != HEADER:
        raise UserError(
            f"{path} is not a CellMap test-crop manifest: its first line must be {','.join(HEADER)}"
        )
    crops: list[TestCrop] = []
    problems: list[str] = []
    seen: dict[tuple[int, str], int] = {}
    datasets: dict[int, tuple[str, int]] = {}
    for number, fields in lines[1:]:
        if not fields or all(not f.strip() for f in fields):
            continue
        try:
            crop = _row(fields)
        except ValueError as exc:
            problems.append(f"line {number}, {exc}")
            continue
        where = datasets.setdefault(crop.id, (crop.dataset, number))
        if where[0] != crop.dataset:
            problems.append(
                f"line {number}, column dataset: {crop.crop} is in dataset {crop.dataset} here "
                f"but in {where[0]} on line {where[1]}; a crop belongs to one dataset"
            )
            continue
        first = seen.setdefault((crop.id, crop.label), number)
        if first != number:
            problems.append(
                f"line {number}, columns crop_name and class_label: {crop.crop}/{crop.label} "
                f"is listed twice (lines {first} and {number}); give each crop and class once"
            )
            continue
        crops.append(crop)
    if problems:
        more = [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        raise UserError(f"{path} has malformed rows:", problems[:20] + more)
    if not crops:
        raise UserError(f"{path}: the manifest lists no crop")
    return crops


def csv_rows(path: Path, what: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each row of the CSV file ``path`` (the ``what`` of messages); a
    UserError for a file that cannot be read, or is not UTF-8 text a CSV reader can read,
    naming the line."""
    try:
        data = read_bytes(path, what=what, limit=MAX_TABLE_BYTES)
    except OSError as exc:
        raise UserError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"the {what} {path} is not UTF-8 text: line {line} has the byte "
            f"{data[exc.start : exc.start + 1]!r}; save it as UTF-8 CSV"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    try:
        for fields in reader:
            rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise UserError(
            f"the {what} {path} is not a readable CSV file: line {reader.line_num + 1}: {exc}"
        ) from None
    return rows


def _row(fields: Sequence[str]) -> TestCrop:
    """One row; a ValueError starting with the column it is about."""
    if len(fields) != len(HEADER):
        raise ValueError(f"expected {len(HEADER)} fields ({','.join(HEADER)}), got {len(fields)}")
    crop, dataset, label, voxel_size, translation, shape = (f.strip() for f in fields)
    number = _CROP.fullmatch(crop)
    if number is None:
        raise ValueError(f"column crop_name: {crop!r} must be a crop number, e.g. 557 or crop557")
    for column, name in (("dataset", dataset), ("class_label", label)):
        if NAME.fullmatch(name) is None:
            raise ValueError(
                f"column {column}: {name!r} must be a name of letters, digits, '_' and '-' "
                "(it becomes a path of what is written)"
            )
    sizes = _numbers(voxel_size, "voxel_size")
    offset = _numbers(translation, "translation")
    extent = _numbers(shape, "shape")
    if any(not math.isfinite(s) or s <= 0 for s in sizes):
        raise ValueError(f"column voxel_size: {voxel_size!r} must be positive numbers (nm)")
    if any(not 1 <= n <= MAX_SIDE or n != int(n) for n in extent):
        raise ValueError(
            f"column shape: {shape!r} must be whole numbers of voxels from 1 to {MAX_SIDE}"
        )
    return TestCrop(
        int(number[1]), dataset, label, tuple(sizes), tuple(offset), tuple(int(n) for n in extent)
    )


def _numbers(text: str, name: str) -> list[float]:
    """Three finite numbers written [a;b;c]."""
    shape = f"must be {AXES} numbers (Z;Y;X), e.g. [8.0;8.0;8.0]"
    items = text.strip().removeprefix("[").removesuffix("]").split(";")
    if not all(_NUMBER.fullmatch(v.strip()) for v in items):
        raise ValueError(f"column {name}: {text!r} {shape}")
    values = [float(v) for v in items]
    if len(values) != AXES:
        raise ValueError(f"column {name}: {text!r} has {len(values)} values; it {shape}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"column {name}: {text!r} {shape}, finite")
    return values


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
