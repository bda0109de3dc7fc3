"""The images ``bioim2im predict`` reads: found from a path, glob, folder or CSV manifest,
opened lazily, checked against the model, and normalised as in training.

Normalisation. Training scales each image with statistics of the whole image (percentiles,
mean and std...). Prediction computes the same statistics once per image (per time point),
from an evenly strided subsample when the image is large, exactly as training's lazy reading
does, then applies them to each block as it is read.
"""

from __future__ import annotations

import csv
import glob
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bioim2im.data.sources import image_stem
from bioim2im.errors import UserError
from bioim2im.formats.trained_model import TrainedModel, mismatch
from bioim2im.io import open_image
from bioim2im.io.base import InMemoryImage
from bioim2im.io.images import InputImage, TimePoint
from bioim2im.userfiles import MAX_TABLE_BYTES, read_text, user_path

STATISTICS_VOXELS = 1 << 24
"""Voxels read to compute an image's normalisation statistics (as in training)."""


def find_inputs(
    inputs: str,
    *,
    manifest_column: str,
    suffixes: Sequence[str],
    split_column: str = "split",
    split: str | None = None,
    report: Callable[[str], None] | None = None,
) -> list[Path]:
    """The image files ``inputs`` names: one image, a glob, a folder or a CSV manifest.

    A folder stands for the images directly in it (hidden ones left out), or for its
    ``manifest_column`` subfolder when it holds no image itself (a training dataset's ``IM/``).
    A manifest's paths are in the column ``manifest_column`` or ``path``, relative to the CSV.
    A manifest with a ``split_column`` (train / val / test, as training reads it) stands for
    its ``split`` rows, by default ``test``; ``split="all"`` takes every row. ``report`` is told
    which rows were taken.
    """
    path = user_path(inputs, "input")
    if path.suffix.lower() == ".csv" and _exists(path) and not path.is_dir():
        return _from_manifest(path, manifest_column, split_column, split, report)
    if split is not None:
        raise UserError(
            f"--split {split} chooses rows of a CSV manifest with a '{split_column}' column; "
            f"{inputs} is not a CSV file"
        )
    if _exists(path):
        if _is_image(path, suffixes) or not path.is_dir():
            return [path]
        found = _images_in(path, suffixes)
        if not found and (path / manifest_column).is_dir():
            found = _images_in(path / manifest_column, suffixes)
        if not found:
            raise UserError(f"no images in {path} (readable file types: {', '.join(suffixes)})")
        return found
    if glob.has_magic(inputs):
        matches = sorted(Path(p) for p in glob.glob(str(path)))
        found = [p for p in matches if _is_image(p, suffixes)]
        if not found:
            raise UserError(
                f"no images match {inputs} (readable file types: {', '.join(suffixes)})"
            )
        return found
    raise UserError(f"input {inputs}: no such file or directory")


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a name too long for the file system does not."""
    try:
        return path.exists()
    except OSError:
        return False


def _is_image(path: Path, suffixes: Sequence[str]) -> bool:
    return image_stem(path, suffixes) is not None


def _images_in(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if _is_image(p, suffixes)]


def _from_manifest(
    path: Path,
    column: str,
    split_column: str,
    split: str | None,
    report: Callable[[str], None] | None,
) -> list[Path]:
    try:
        text = read_text(path, what="CSV manifest", limit=MAX_TABLE_BYTES, encoding="utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except (OSError, csv.Error) as exc:
        raise UserError(f"cannot read the manifest {path}: {exc}") from None
    columns = list(rows[0]) if rows else []
    if split_column in columns:
        rows = _split_rows(path, rows, split_column, split, report)
    elif split is not None and split != "all":
        raise UserError(
            f"--split {split}: manifest {path} has no '{split_column}' column "
            f"(columns: {', '.join(columns) or 'none'})"
        )
    chosen = next((c for c in (column, "path") if c in columns), None)
    if chosen is None:
        raise UserError(
            f"manifest {path} has no column '{column}' or 'path' "
            f"(columns: {', '.join(columns) or 'none'})"
        )
    files = []
    for line, row in enumerate(rows, start=2):
        cell = (row.get(chosen) or "").strip()
        if not cell:
            raise UserError(f"{path} line {line}: no path in column '{chosen}'")
        file = user_path(cell, f"{path} line {line}")
        files.append(file if file.is_absolute() else path.parent / file)
    if not files:
        raise UserError(f"manifest {path} lists no images")
    return files


def _split_rows(
    path: Path,
    rows: list[dict[str, str]],
    column: str,
    split: str | None,
    report: Callable[[str], None] | None,
) -> list[dict[str, str]]:
    """The rows of ``split`` (default ``test``; ``all``: every row), said through ``report``."""
    from bioim2im.data.sources import SPLIT_NAMES

    def name(value: str | None) -> str:
        text = (value or "").strip().lower()
        return SPLIT_NAMES.get(text, text)

    if split == "all":
        if report is not None:
            report(f"{path}: predicting all {len(rows)} rows (--split all)")
        return rows
    wanted = name(split or "test")
    chosen = [row for row in rows if name(row.get(column)) == wanted]
    counts: dict[str, int] = {}
    for row in rows:
        counts[name(row.get(column))] = counts.get(name(row.get(column)), 0) + 1
    if not chosen:
        found = ", ".join(f"{count} {value or '(empty)'}" for value, count in counts.items())
        raise UserError(
            f"manifest {path} has no '{wanted}' rows in its '{column}' column (it has: "
            f"{found or 'no rows'}); choose rows with --split {'|'.join(counts) or 'NAME'}|all"
        )
    if report is not None:
        how = "--split to choose others, --split all for every row" if split is None else ""
        report(
            f"{path}: predicting its {len(chosen)} '{wanted}' rows of {len(rows)} "
            f"(column '{column}'{'; ' + how if how else ''})"
        )
    return chosen


def open_inputs(
    paths: Sequence[Path], model: TrainedModel, suffixes: Sequence[str]
) -> list[InputImage]:
    """Open every input (headers only) and check it fits ``model``; all problems at once."""
    images, problems = [], []
    for path in paths:
        try:
            image = open_image(path, axes=model.preset.data.axes, registry=model.registry)
        except UserError as exc:
            problems.append(str(exc))
            continue
        found = InputImage(path, image_stem(path, suffixes) or path.stem, image)
        problem = mismatch(found, model)
        if problem:
            problems.append(problem)
        else:
            images.append(found)
    by_stem: dict[str, list[Path]] = {}
    for found in images:
        by_stem.setdefault(found.stem, []).append(found.path)
    problems += [
        f"inputs {', '.join(map(str, same))} would all write outputs named '{stem}'"
        for stem, same in by_stem.items()
        if len(same) > 1
    ]
    if problems:
        noun = "input cannot" if len(problems) == 1 else "inputs cannot"
        raise UserError(f"{len(problems)} {noun} be predicted:", problems)
    return images


def normalizer(
    found: InputImage, view: TimePoint, model: TrainedModel
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, TimePoint | InMemoryImage]:
    """How blocks of ``view`` are normalised, and what to read them from.

    Normalisations with separate statistics (all built-in ones) get them once from a subsample
    and are applied block by block; any other is applied to the whole time point, read into
    memory.
    """
    from bioim2im.data.volumes import Prepared, View

    normalize, nan_policy = model.input_normalization()
    path = str(found.path)
    fixed = {"T": view.time_point} if "T" in found.axes else {}
    if normalize is None:  # a network taking images as they are (a bare ONNX file)
        return Prepared(path, nan_policy), view
    if hasattr(normalize, "statistics"):
        sample = View(found.image, fixed).subsample(STATISTICS_VOXELS)
        stats = normalize.statistics(Prepared(path, nan_policy)(sample))
        return Prepared(path, nan_policy, normalize=normalize, stats=stats), view
    whole = Prepared(path, nan_policy)(view.channel_first())
    normalized = np.ascontiguousarray(normalize(whole), dtype=np.float32)
    return None, InMemoryImage(normalized, axes="C" + found.spatial, path=path)
