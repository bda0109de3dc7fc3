"""``bioim2im cellmap pack``: the submission zip, written from predictions and checked against the
test-crop manifest, with one precise message per problem.

The zip holds a Zarr-2 group at its top (``.zgroup``, ``crop<N>/.zgroup``) with one array per
test crop and class, ``crop<N>/<class>``, on the crop's grid: shape, ``voxel_size`` and
``translation`` attributes (nm) as the manifest gives them; uint8 0/1 masks for semantic
classes, integer object ids for instance classes (the challenge relabels them by connected
components). The toolbox's own packer writes the same layout.

Packing reads ``<predictions>/crop<N>/<class>`` (an array with voxel_size and translation
attributes, or an OME-NGFF multiscale group, e.g. what ``bioim2im cellmap predict`` writes), and
brings each onto its crop's grid (:mod:`bioim2im_cellmap.grids`; semantic probabilities are
thresholded at 0.5). Then the written zip is read back and checked as :func:`check_submission`
checks any zip; the zip appears only when every check passes.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from bioim2im.errors import UserError
from bioim2im.io import remote
from bioim2im.io.atomic import check_output_file, partial_path, publish
from bioim2im.io.multiscale import numbers
from bioim2im_cellmap.classes import INSTANCE_CLASSES
from bioim2im_cellmap.grids import Grid, covers, open_labels, resample
from bioim2im_cellmap.manifest import TestCrop, by_crop, read_manifest

SCALE_TOLERANCE = 1e-3
"""Relative difference allowed between a voxel size (or a translation, in voxels) and the
manifest's."""


@dataclass
class PackResult:
    path: Path
    arrays: int
    missing: list[str] = field(default_factory=list)
    """Crops or classes left out (with ``allow_missing``): the challenge scores them as empty."""
    warnings: list[str] = field(default_factory=list)
    """Predictions that cover only part of their crop (padded with background)."""


def pack(
    predictions: str | Path,
    manifest: str | Path,
    output: str | Path,
    *,
    overwrite: bool = False,
    allow_missing: bool = False,
    instance_classes: Collection[str] = INSTANCE_CLASSES,
) -> PackResult:
    """Write the submission zip of ``predictions`` for the crops of ``manifest``; check it."""
    output = Path(output)
    if output.suffix != ".zip":
        raise UserError(f"{output}: the submission must be a .zip file")
    check_output_file(output, "--output", overwrite=overwrite, inputs=[predictions, manifest])
    crops = read_manifest(manifest)
    output.parent.mkdir(parents=True, exist_ok=True)
    template = str(predictions)
    templated = "{crop}" in template or "{dataset}" in template
    source: zarr.Group | None = None
    if not templated:
        node = remote.open_node(predictions)
        if not isinstance(node, zarr.Group):
            raise UserError(f"{predictions}: expected a zarr group of crop<N> groups")
        source = node
    problems: list[str] = []
    missing: list[str] = []
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".bioim2im-pack-", dir=output.parent) as work:
        root = Path(work) / "submission.zarr"
        group = zarr.open_group(root, mode="w", zarr_format=2)
        written = 0
        for crop_id, rows in by_crop(crops).items():
            folders = {row.label: _crop_folder(template, source, row) for row in rows}
            if all(folder is None for folder in folders.values()):
                labels = ", ".join(r.label for r in rows)
                where = template if templated else predictions
                missing.append(
                    f"crop{crop_id}: missing from {where} (all {len(rows)} classes: {labels})"
                )
                continue
            crop_group = group.require_group(f"crop{crop_id}")
            for row in rows:
                folder = folders[row.label]
                location = None if folder is None else remote.join(folder, row.label)
                if location is None or not _exists(location):
                    missing.append(f"crop{crop_id}/{row.label}: missing from {folder}")
                    continue
                try:
                    values, note = _on_crop(location, row, row.label in instance_classes)
                except UserError as exc:
                    problems.append(f"crop{crop_id}/{row.label}: {exc}")
                    continue
                if note:
                    warnings.append(f"crop{crop_id}/{row.label}: {note}")
                _write(crop_group, row, values)
                written += 1
        if missing and not allow_missing:
            problems = missing + problems
        if not problems:
            archive = Path(work) / "submission.zip"
            _zip(root, archive)
            problems = check_submission(
                archive, crops, instance_classes=instance_classes, required=not allow_missing
            )
        if problems:
            noun = "problem" if len(problems) == 1 else "problems"
            raise UserError(f"no submission written: {len(problems)} {noun}:", problems)
        partial = partial_path(output, str(os.getpid()))
        shutil.move(str(archive), partial)
        publish(partial, output)
    return PackResult(output, written, missing, warnings)


def _crop_folder(template: str, source: zarr.Group | None, row: TestCrop) -> str | None:
    """Where the predictions of ``row``'s crop are: ``template`` with ``{dataset}`` and
    ``{crop}`` (``crop<N>``) filled in, as the toolbox's packer fills them (other braces stay
    as they are), or the ``crop<N>`` (or ``<N>``) group of the zarr group ``source``."""
    if source is None:
        folder = template.replace("{dataset}", row.dataset).replace("{crop}", f"crop{row.id}")
        return folder if _exists(folder) else None
    for name in (f"crop{row.id}", str(row.id)):
        if name in source and isinstance(source[name], zarr.Group):
            return remote.join(template, name)
    return None


def _exists(location: str) -> bool:
    try:
        remote.open_node(location)
    except UserError:
        return False
    return True


def _on_crop(location: str, row: TestCrop, instance: bool) -> tuple[np.ndarray, str]:
    """The labels of ``location`` on ``row``'s grid, and a warning when they cover only part
    of the crop (the rest is background, as the toolbox's packer pads it)."""
    grid = Grid(row.voxel_size, row.translation, row.shape)
    levels = open_labels(location, grid)
    finest = levels[0]
    if instance and finest.dtype.kind == "f":
        raise UserError(
            f"{location} holds floating-point values ({finest.dtype}) but {row.label} is scored "
            "as instances: write integer object ids (or a 0/1 mask, split by connected components)"
        )
    note = ""
    if not any(covers(level, grid) for level in levels):
        note = (
            f"covers only part of the crop ({grid.describe()}): it spans "
            f"{[round(float(v), 2) for v in finest.start]} to "
            f"{[round(float(v), 2) for v in finest.stop]} nm; the rest is packed as background"
        )
    return resample(levels, grid, instance=instance), note


def _write(group: zarr.Group, row: TestCrop, labels: np.ndarray) -> None:
    if labels.dtype == bool or labels.dtype.kind == "f":
        values = (labels > 0).astype(np.uint8)
    else:
        top = int(labels.max()) if labels.size else 0
        values = labels.astype(np.uint32 if top < 2**32 else np.uint64)
    array = group.create_array(
        row.label,
        shape=values.shape,
        dtype=values.dtype,
        chunks=tuple(min(n, 64) for n in values.shape),
    )
    array[...] = values
    array.attrs.update(
        voxel_size=list(row.voxel_size), translation=list(row.translation), shape=list(row.shape)
    )


def _zip(root: Path, archive: Path) -> None:
    # The zarr's contents at the top of the zip, as the challenge expects.
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for folder, _, files in os.walk(root):
            for name in sorted(files):
                path = Path(folder, name)
                out.write(path, path.relative_to(root).as_posix())


# --- checking ------------------------------------------------------------------------------


def check_submission(
    path: str | Path,
    crops: Sequence[TestCrop] | str | Path,
    *,
    instance_classes: Collection[str] = INSTANCE_CLASSES,
    required: bool = True,
) -> list[str]:
    """Every problem of a submission zip for the test crops (a manifest path or its rows).

    Checked: a zip holding a Zarr-2 group at its top; every crop and class of the manifest
    present (unless ``required`` is false); each array on its crop's grid (shape, voxel_size,
    translation) with labels of a usable type, and every chunk readable.
    """
    from bioim2im_cellmap.evaluation import submission_root

    path = Path(path)
    rows = read_manifest(crops) if isinstance(crops, (str, Path)) else list(crops)
    if not path.is_file():
        return [f"{path}: no such file"]
    if not zipfile.is_zipfile(path):
        return [f"{path}: not a zip file"]
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bioim2im-check-") as folder:
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                if bad is not None:
                    return [f"{path}: the zip is damaged (entry {bad} fails its checksum)"]
                archive.extractall(folder)
        except (OSError, zipfile.BadZipFile) as exc:
            return [f"{path}: cannot unpack the zip ({exc})"]
        top = Path(folder)
        if (top / "zarr.json").exists():
            return [
                f"{path}: the zarr inside is Zarr-3 (zarr.json); the challenge reads Zarr-2 (.zgroup)"
            ]
        if not (top / ".zgroup").exists():
            try:
                nested = submission_root(top, path)
            except UserError:
                nested = top
            if nested == top or not (nested / ".zgroup").exists():
                return [
                    f"{path}: no .zgroup at the top of the zip: it must hold a Zarr-2 group's contents (.zgroup, crop<N>/...)"
                ]
            # `zip -r submission.zip submission.zarr`, as the challenge's documentation says:
            # its evaluator reads the group inside the one *.zarr folder.
            top = nested
        group = zarr.open_group(top, mode="r", zarr_format=2)
        for crop_id, crop_rows in by_crop(rows).items():
            name = f"crop{crop_id}"
            crop_group = group.get(name)
            if not isinstance(crop_group, zarr.Group):
                if required:
                    problems.append(
                        f"{name}: missing (its classes: {', '.join(r.label for r in crop_rows)})"
                    )
                continue
            for row in crop_rows:
                where = f"{name}/{row.label}"
                if row.label not in crop_group:
                    if required:
                        problems.append(f"{where}: missing")
                    continue
                problems += [
                    f"{where}: {p}"
                    for p in _check_array(
                        top / name / row.label, row, row.label in instance_classes
                    )
                ]
    return problems


def _check_array(location: Path, row: TestCrop, instance: bool) -> list[str]:
    node = zarr.open(location, mode="r")
    scale: list[float] | None
    translation: list[float] | None
    if isinstance(node, zarr.Group):
        # The challenge lists a crop's classes with array_keys(): a group is not found there,
        # so the class would be scored as missing, however good its levels.
        kind = "an OME-NGFF multiscale group" if "multiscales" in node.attrs else "a zarr group"
        return [
            f"{kind}, not an array: the challenge's evaluation reads only Zarr-2 arrays, so "
            "this class would score as missing; submit one array on the crop's grid (bioim2im "
            "cellmap pack writes it)"
        ]
    else:
        array = node
        attrs = dict(node.attrs)
        found = attrs.get("voxel_size", attrs.get("resolution", attrs.get("scale")))
        offset = attrs.get("translation", attrs.get("offset"))
        scale = None if found is None else numbers(found) or [math.nan]
        translation = None if offset is None else numbers(offset) or [math.nan]
    problems = []
    shape = tuple(array.shape)
    if shape != row.shape:
        problems.append(f"shape {list(shape)}, but the crop is {list(row.shape)}")
    if scale is None:
        problems.append(f"no voxel_size attribute (the crop's is {list(row.voxel_size)} nm)")
    elif not _close(scale, row.voxel_size, row.voxel_size):
        problems.append(f"voxel size {list(scale)} nm, but the crop's is {list(row.voxel_size)} nm")
    if translation is None:
        problems.append(f"no translation attribute (the crop's is {list(row.translation)} nm)")
    elif not _close(translation, row.translation, row.voxel_size):
        problems.append(
            f"translation {list(translation)} nm, but the crop's is {list(row.translation)} nm"
        )
    dtype = np.dtype(array.dtype)
    if dtype.kind == "f":
        problems.append(
            f"dtype {dtype}: instance classes need integer ids"
            if instance
            else f"dtype {dtype}: the evaluation counts every value > 0 as foreground, so "
            "probabilities would all count; submit a 0/1 uint8 mask"
        )
    elif dtype.kind not in "biu":
        problems.append(f"dtype {dtype}: submit bool or integer labels")
    try:
        values = np.asarray(array[...])
    except (OSError, ValueError, RuntimeError) as exc:
        return [*problems, f"unreadable data ({type(exc).__name__}: {exc})"]
    if dtype.kind == "i" and values.size and values.min() < 0:
        problems.append("negative labels; background is 0 and objects are positive ids")
    return problems


def _close(found: Sequence[float], expected: Sequence[float], voxel: Sequence[float]) -> bool:
    if len(found) != len(expected):
        return False
    return all(
        abs(f - e) <= SCALE_TOLERANCE * max(abs(v), 1e-9)
        for f, e, v in zip(found, expected, voxel, strict=True)
    )
