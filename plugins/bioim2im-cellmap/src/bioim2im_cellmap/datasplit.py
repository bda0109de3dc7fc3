"""The challenge toolbox's ``datasplit.csv``: read as it is, and generated from a search path.

A datasplit has one row per annotated crop, no header::

    "train","/data/jrc_hela-2/jrc_hela-2.zarr","recon-1/em/fibsem-uint8","/data/jrc_hela-2/jrc_hela-2.zarr","recon-1/labels/groundtruth/crop1/[mito,nuc]"

usage (``train`` or ``validate``), the raw data's zarr store and the path of its multiscale
group inside it, the crop's zarr store and the path of the crop group, ending in the classes the
crop annotates. Stores are paths (relative ones are taken relative to the CSV file) or
``s3://``/``https://`` URLs.

:func:`make_datasplit` finds the crops of a search path such as
``data/{dataset}/{dataset}.zarr/recon-1/labels/groundtruth/{crop}`` (``{dataset}`` and ``{crop}``
match one path component each) and the classes each annotates (a class is annotated in a crop
when the crop holds a group of that name), then splits them as the toolbox's
``make_datasplit_csv`` does, except that the split is seeded and so reproducible.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from bioim2im.errors import UserError
from bioim2im.io import remote
from bioim2im_cellmap.manifest import NAME, csv_rows

USAGES = {"train": "train", "validate": "validate", "val": "validate", "validation": "validate"}
ForceAllClasses = Literal["no", "train", "validate", "both"]
_CLASSES = re.compile(r"^(?P<group>.*?)/?\[(?P<classes>[^\]]*)\]$")
# The toolbox's layout: the raw data sits next to the labels in the same zarr store.
_TOOLBOX_LABELS = "labels/groundtruth/{crop}"
_TOOLBOX_RAW = "em/fibsem-uint8"


@dataclass(frozen=True)
class CropRow:
    """One annotated crop of a datasplit."""

    usage: str
    """``train`` or ``validate``."""
    raw_store: str
    raw_path: str
    crop_store: str
    crop_path: str
    classes: tuple[str, ...]
    """The classes the crop annotates (a subset of what training asks for, in general)."""

    @property
    def raw(self) -> str:
        """Location of the raw data's multiscale group."""
        return remote.join(self.raw_store, self.raw_path)

    @property
    def crop(self) -> str:
        """Location of the crop group (one subgroup per class)."""
        return remote.join(self.crop_store, self.crop_path)

    @property
    def dataset(self) -> str:
        """The dataset's name: its zarr store's name without ``.zarr``."""
        name = self.raw_store.rstrip("/").rsplit("/", 1)[-1]
        return name[: -len(".zarr")] if name.endswith(".zarr") else name

    @property
    def name(self) -> str:
        """The crop's name, e.g. ``crop1``."""
        return self.crop_path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        """``dataset/crop``, how reports name a crop."""
        return f"{self.dataset}/{self.name}"


def read_datasplit(path: str | Path) -> list[CropRow]:
    """The rows of a datasplit CSV, or a UserError listing every malformed line."""
    path = Path(path)
    rows, problems = [], []
    for number, fields in csv_rows(path, "datasplit"):
        if not fields or all(not f.strip() for f in fields):
            continue
        row, problem = _row(fields, path.parent)
        if problem:
            problems.append(f"line {number}: {problem}")
        elif row is not None:
            rows.append(row)
    if problems:
        raise UserError(
            f"{path} is not a CellMap datasplit (rows of usage, raw store, raw array, crop store, "
            "crop group/[classes]):",
            problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else []),
        )
    if not rows:
        raise UserError(f"{path}: the datasplit has no rows")
    return rows


def _row(fields: Sequence[str], base: Path) -> tuple[CropRow | None, str | None]:
    if len(fields) != 5:
        return None, f"expected 5 fields, got {len(fields)}"
    usage, raw_store, raw_path, crop_store, crop_field = (f.strip() for f in fields)
    if usage.lower() not in USAGES:
        return None, f"usage '{usage}' must be train or validate"
    match = _CLASSES.match(crop_field)
    if match is None:
        return (
            None,
            f"'{crop_field}' must end with the crop's classes in brackets, e.g. crop1/[mito,nuc]",
        )
    classes = tuple(c.strip() for c in match["classes"].split(",") if c.strip())
    if not classes:
        return None, f"'{crop_field}' lists no class"
    odd = next((c for c in classes if NAME.fullmatch(c) is None), None)
    if odd is not None:
        return (
            None,
            f"class {odd!r} in '{crop_field}' must be a name of letters, digits, '_' and '-'",
        )
    return (
        CropRow(
            USAGES[usage.lower()],
            _located(raw_store, base),
            raw_path.strip("/"),
            _located(crop_store, base),
            match["group"].strip("/"),
            classes,
        ),
        None,
    )


def _located(store: str, base: Path) -> str:
    if remote.is_remote(store) or Path(store).expanduser().is_absolute():
        return str(Path(store).expanduser()) if not remote.is_remote(store) else store
    return str((base / store).resolve())


def format_datasplit(rows: Sequence[CropRow]) -> str:
    """The CSV text of ``rows``, as the toolbox writes it."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for row in rows:
        groups = f"{row.crop_path}/[{','.join(row.classes)}]"
        writer.writerow([row.usage, row.raw_store, row.raw_path, row.crop_store, groups])
    return out.getvalue()


def write_datasplit(rows: Sequence[CropRow], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``rows`` to ``path`` atomically; an existing file is replaced only with ``overwrite``,
    and never one of the stores the rows name (what the datasplit was made from)."""
    from bioim2im.io.atomic import atomic_file, check_output_file

    path = Path(path)
    stores = [store for row in rows for store in (row.raw_store, row.crop_store)]
    check_output_file(path, "--output", overwrite=overwrite, inputs=stores)
    with atomic_file(path) as partial:
        partial.write_text(format_datasplit(rows), encoding="utf-8")
    return path


# --- generating ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundCrops:
    """What :func:`make_datasplit` found: the rows, and the crops or classes it left out, why."""

    rows: list[CropRow]
    skipped: list[str]


def make_datasplit(
    search_path: str,
    classes: Sequence[str],
    *,
    raw: str | None = None,
    val_fraction: float = 0.1,
    datasets: Sequence[str] = ("*",),
    crops: Sequence[str] = ("*",),
    scale: Sequence[float] | None = None,
    force_all_classes: ForceAllClasses = "no",
    seed: int = 0,
) -> FoundCrops:
    """The datasplit of every crop under ``search_path`` annotating at least one of ``classes``.

    ``raw``: where each dataset's raw data is, with ``{dataset}``; default: the toolbox's layout
    (``.../recon-1/em/fibsem-uint8`` next to ``.../recon-1/labels/groundtruth/{crop}``).
    ``datasets``/``crops``: names or glob patterns to keep (crops as ``crop12`` or ``12``).
    ``scale``: keep a class in a crop only when it is annotated at this voxel size or finer.
    ``val_fraction`` of the crops go to validation (seeded by ``seed``; at least one of each when
    there are two crops or more). ``force_all_classes``: crops lacking one of ``classes`` move
    out of that split (``train``/``validate``) or are left out (``both``).
    """
    if "{dataset}" not in search_path or "{crop}" not in search_path:
        raise UserError(
            f"search path {search_path!r} must hold {{dataset}} and {{crop}}, e.g. "
            "'data/{dataset}/{dataset}.zarr/recon-1/labels/groundtruth/{crop}'"
        )
    if not classes:
        raise UserError("give at least one class (--classes nuc,mito)")
    odd = next((c for c in classes if NAME.fullmatch(c) is None), None)
    if odd is not None:
        raise UserError(f"class {odd!r}: give names of letters, digits, '_' and '-', e.g. mito")
    for option, patterns in (("--datasets", datasets), ("--crops", crops)):
        odd = next((p for p in patterns if not p or "/" in p or p in (".", "..")), None)
        if odd is not None:
            raise UserError(
                f"{option} {odd!r}: give names or glob patterns of one path component (no '/')"
            )
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"the validation fraction must be in [0, 1), got {val_fraction}")
    if seed < 0:
        raise UserError(f"the seed must be 0 or more, got {seed}")
    if scale is not None and not all(math.isfinite(s) and s > 0 for s in scale):
        raise UserError(f"the scale must be positive numbers (nm), got {list(scale)}")
    raw = raw if raw is not None else _toolbox_raw(search_path)
    # The CSV may be read from anywhere: local paths are written absolute.
    search_path, raw = (
        p if remote.is_remote(p) else str(Path(p).absolute()) for p in (search_path, raw)
    )
    if "{dataset}" not in raw:
        raise UserError(f"raw path {raw!r} must hold {{dataset}}")
    crop_names = ["*" if c == "*" else (f"crop{c}" if c.isdigit() else c) for c in crops]

    annotated: dict[str, dict[str, object]] = {}
    skipped: list[str] = []
    pattern = _matcher(search_path)
    for dataset in datasets:
        for crop in crop_names:
            base = search_path.replace("{dataset}", dataset).replace("{crop}", crop)
            for name in classes:
                for found in remote.glob(remote.join(base, name)):
                    location = found.rstrip("/")[: -len(name) - 1]
                    fields = pattern.fullmatch(location)
                    if fields is None:
                        continue
                    if scale is not None and not _fine_enough(found, scale):
                        skipped.append(
                            f"{location}: class {name} left out, annotated coarser than {list(scale)}"
                        )
                        continue
                    entry = annotated.setdefault(
                        location, {"fields": fields.groupdict(), "classes": []}
                    )
                    entry["classes"].append(name)  # type: ignore[attr-defined]
    rows = []
    for location, entry in sorted(annotated.items()):
        dataset = entry["fields"]["dataset"]  # type: ignore[index]
        raw_location = raw.replace("{dataset}", dataset)
        if not _exists(raw_location):
            skipped.append(f"{location}: left out, no raw data at {raw_location}")
            continue
        raw_store, raw_path = split_store(raw_location)
        crop_store, crop_path = split_store(location)
        rows.append(
            CropRow("train", raw_store, raw_path, crop_store, crop_path, tuple(entry["classes"]))  # type: ignore[arg-type]
        )
    if not rows:
        raise UserError(
            f"no crop under {search_path} annotates any of {', '.join(classes)}",
            skipped[:10],
        )
    rows = _split(rows, val_fraction, seed)
    return _forced(rows, set(classes), force_all_classes, skipped)


def _toolbox_raw(search_path: str) -> str:
    head, sep, _ = search_path.rpartition(_TOOLBOX_LABELS)
    if not sep:
        raise UserError(
            f"cannot tell where the raw data of {search_path!r} is; give it with --raw, e.g. "
            "'data/{dataset}/{dataset}.zarr/recon-1/em/fibsem-uint8'"
        )
    return head + _TOOLBOX_RAW


def _matcher(search_path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{dataset\}|\{crop\})", search_path.rstrip("/"))
    seen: set[str] = set()
    regex = ""
    for part in parts:
        if part in ("{dataset}", "{crop}"):
            name = part[1:-1]
            regex += f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+)"
            seen.add(name)
        else:
            regex += re.escape(part)
    return re.compile(regex)


def split_store(location: str) -> tuple[str, str]:
    """(the zarr store, the path inside it) of a location: split after its last ``.zarr``."""
    parts = location.rstrip("/").split("/")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].endswith((".zarr", ".n5")):
            return "/".join(parts[: i + 1]), "/".join(parts[i + 1 :])
    return location, ""


def _exists(location: str) -> bool:
    try:
        remote.open_node(location)
    except UserError:
        return False
    return True


def _fine_enough(location: str, scale: Sequence[float]) -> bool:
    from bioim2im.io.multiscale import open_levels

    finest = open_levels(location)[0]
    wanted = list(scale) * 3 if len(scale) == 1 else list(scale)
    return all(s <= w * 1.001 for s, w in zip(finest.scale, wanted, strict=True))


def _split(rows: list[CropRow], val_fraction: float, seed: int) -> list[CropRow]:
    import numpy as np

    n_val = math.floor(val_fraction * len(rows) + 0.5)
    if val_fraction > 0 and len(rows) >= 2:
        n_val = min(max(n_val, 1), len(rows) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(rows))[:n_val].tolist())
    return [
        replace(row, usage="validate" if i in chosen else "train") for i, row in enumerate(rows)
    ]


def _forced(
    rows: list[CropRow], classes: set[str], force: ForceAllClasses, skipped: list[str]
) -> FoundCrops:
    kept, notes = force_all_classes(rows, classes, force)
    skipped += [
        f"{row.crop}: left out, it lacks {', '.join(lacking)}"
        for row, lacking, moved in notes
        if moved is None
    ]
    if not kept:
        raise UserError(f"no crop annotates all of {', '.join(sorted(classes))}", skipped[:10])
    return FoundCrops(kept, skipped)


def force_all_classes(
    rows: Sequence[CropRow], classes: Collection[str], force: str
) -> tuple[list[CropRow], list[tuple[CropRow, list[str], str | None]]]:
    """The toolbox's ``force_all_classes`` over a datasplit's rows: a crop of the split ``force``
    names (``train`` or ``validate``) that lacks one of ``classes`` goes to the other split;
    with ``both`` (the toolbox's ``True``) it is left out; ``no`` changes nothing. Returns the
    rows kept (moved ones with their new usage) and each row changed, as it was, with the
    classes it lacks and the split it moved to (None: left out)."""
    if force == "no":
        return list(rows), []
    kept: list[CropRow] = []
    changed: list[tuple[CropRow, list[str], str | None]] = []
    for row in rows:
        lacking = sorted(set(classes) - set(row.classes))
        if not lacking or (force != "both" and row.usage != force):
            kept.append(row)
        elif force == "both":
            changed.append((row, lacking, None))
        else:
            other = "validate" if force == "train" else "train"
            changed.append((row, lacking, other))
            kept.append(replace(row, usage=other))
    return kept, changed
