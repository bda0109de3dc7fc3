"""Finding the training files: which input image goes with which targets and cost map, per split.

Layouts of ``data.path`` (names are ``data.source``, each head's ``target`` and
``data.cost_map``; below the defaults IM, GT and CM):

- ``folders``: ``IM/``, ``GT/`` (one folder per target name) and optional ``CM/``, files matched
  by name without suffix (``IM/a.tif`` goes with ``GT/a.tif`` or ``GT/a.ome.zarr``);
- ``pairs``: ``a_IM.tif``, ``a_GT.tif`` and optional ``a_CM.tif`` side by side in one folder;
- ``csv``: one CSV file with a column per name (paths relative to the CSV) and optionally a
  split column (``train``/``val``/``test``), or a folder holding ``train.csv``, ``valid.csv``
  (or ``val.csv``) and ``test.csv``;
- ``auto``: whichever of those ``data.path`` looks like.

A separate ``data.val_path`` (any layout) is the validation set. Without either, a seeded
split by file holds out ``data.val_fraction`` of the files for validation.

Unpaired data (``data.unpaired``, for CycleGAN) pairs nothing: the input files (e.g. every file
in ``IM/``) and each target name's files (every file in ``GT/``), whatever their names and
numbers, are found and split on their own, in the same layouts.

Nothing here raises on bad data: every problem is collected, so that ``bioim2im check --data``
can report them all at once; :meth:`Splits.ensure_usable` raises them together.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bioim2im.errors import UserError
from bioim2im.io.atomic import write_text
from bioim2im.userfiles import MAX_TABLE_BYTES, read_text, user_path

if TYPE_CHECKING:
    from bioim2im.config.schema import DataConfig, HeadConfig
    from bioim2im.plugin.registry import ComponentRegistry

IMAGE_SUFFIXES: tuple[str, ...] = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SPLIT_FILES = {"train.csv": "train", "valid.csv": "val", "val.csv": "val", "test.csv": "test"}
DEFAULT_TARGET = "GT"


@dataclass(frozen=True)
class Pair:
    """The files of one example: the input image, one file per target name, a cost map."""

    name: str
    image: Path
    targets: Mapping[str, Path]
    cost_map: Path | None = None

    def files(self) -> list[Path]:
        return [self.image, *self.targets.values(), *([self.cost_map] if self.cost_map else [])]


@dataclass
class Found:
    """What one path holds: pairs by split (None when the path gives no split) and problems."""

    layout: str
    pairs: dict[str | None, list[Pair]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class Splits:
    """The pairs of each split, where they came from, and every problem found on the way."""

    path: Path | None
    train: list[Pair] = field(default_factory=list)
    val: list[Pair] = field(default_factory=list)
    test: list[Pair] = field(default_factory=list)
    layout: str = "auto"
    problems: list[str] = field(default_factory=list)
    unpaired_targets: dict[str, Splits] = field(default_factory=dict)
    """Unpaired data only: the splits of each target name's files, whose pairs hold just an
    image (the target file); the input pairs above then hold no targets."""

    def by_split(self) -> dict[str, list[Pair]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def ensure_usable(self) -> None:
        if self.problems:
            noun = "problem" if len(self.problems) == 1 else "problems"
            raise UserError(f"dataset {self.path} has {len(self.problems)} {noun}:", self.problems)


def reader_suffixes(registry: ComponentRegistry) -> tuple[str, ...]:
    """Every file suffix a registered reader opens (plugins' included)."""
    found = {
        s.lower() for c in registry if c.kind == "reader" for s in c.extras.get("suffixes", ())
    }
    return tuple(sorted(found))


def target_names(heads: Mapping[str, HeadConfig]) -> list[str]:
    """The target names the heads read, each once, in head order."""
    return list(dict.fromkeys(head.target or DEFAULT_TARGET for head in heads.values()))


def image_stem(path: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> str | None:
    """The name without its image suffix (``a.ome.tif`` -> ``a``), or None for other files."""
    name = path.name
    if name.startswith("."):
        return None
    lower = name.lower()
    matches = [s for s in suffixes if lower.endswith(s)]
    if not matches:
        return None
    return name[: -len(max(matches, key=len))]


def _images_in(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.iterdir()):
        stem = image_stem(path, suffixes)
        if stem is not None:
            found[stem] = path
    return found


def find_pairs(
    path: Path,
    *,
    layout: str = "auto",
    source: str = "IM",
    targets: Sequence[str] = (DEFAULT_TARGET,),
    cost_map: str | None = "CM",
    split_column: str = "split",
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
) -> Found:
    """The pairs ``path`` holds in ``layout``, and the problems found (each naming files)."""
    if not _exists(path):
        return Found(layout, problems=[f"{path} does not exist"])
    if not path.is_dir() and not path.is_file():
        return Found(
            layout,
            problems=[f"{path} is not a folder or a regular file (a FIFO, socket or device)"],
        )
    if layout == "auto":
        layout, problem = detect_layout(path, source, suffixes)
        if problem:
            return Found(layout, problems=[problem])
    if layout == "csv":
        return _from_csv(path, source, targets, cost_map, split_column)
    if not path.is_dir():
        return Found(layout, problems=[f"{path} is a file; layout '{layout}' needs a folder"])
    if layout == "folders":
        return _from_folders(path, source, targets, cost_map, suffixes)
    return _from_pairs(path, source, targets, cost_map, suffixes)


def detect_layout(
    path: Path, source: str, suffixes: Sequence[str] = IMAGE_SUFFIXES
) -> tuple[str, str | None]:
    """The layout ``path`` looks like, or ("auto", problem) when it matches none."""
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv", None
        return "auto", f"{path} is a file but not a CSV manifest"
    if any((path / name).is_file() for name in SPLIT_FILES):
        return "csv", None
    if (path / source).is_dir():
        return "folders", None
    if any((image_stem(p, suffixes) or "").endswith(f"_{source}") for p in path.iterdir()):
        return "pairs", None
    # Last: a lone CSV beside image folders or pairs is more likely notes than a manifest.
    if len(list(path.glob("*.csv"))) == 1:
        return "csv", None
    return "auto", (
        f"cannot tell how {path} is organised: expected a subfolder {source}/ (layout 'folders'), "
        f"files named NAME_{source}.tif (layout 'pairs') or a CSV manifest (layout 'csv')"
    )


def _from_folders(
    root: Path, source: str, targets: Sequence[str], cost_map: str | None, suffixes: Sequence[str]
) -> Found:
    found = Found("folders")
    missing = [root / name for name in (source, *targets) if not (root / name).is_dir()]
    if missing:
        needs = f"{source}/" + (f" and {', '.join(f'{t}/' for t in targets)}" if targets else "")
        found.problems += [f"missing folder {m} (layout 'folders' needs {needs})" for m in missing]
        return found
    images = _images_in(root / source, suffixes)
    by_target = {t: _images_in(root / t, suffixes) for t in targets}
    cost_maps = (
        _images_in(root / cost_map, suffixes) if cost_map and (root / cost_map).is_dir() else {}
    )
    if not images:
        found.problems.append(f"{root / source} holds no images (looked for {', '.join(suffixes)})")
    pairs = []
    for stem, image in images.items():
        lacking = [t for t in targets if stem not in by_target[t]]
        for t in lacking:
            found.problems.append(
                f"{image} has no matching file in {root / t}/ (expected {root / t / image.name})"
            )
        if not lacking:
            pairs.append(
                Pair(stem, image, {t: by_target[t][stem] for t in targets}, cost_maps.get(stem))
            )
    for t in targets:
        for stem, orphan in by_target[t].items():
            if stem not in images:
                found.problems.append(f"{orphan} has no matching input image in {root / source}/")
    found.pairs[None] = pairs
    return found


def _from_pairs(
    root: Path, source: str, targets: Sequence[str], cost_map: str | None, suffixes: Sequence[str]
) -> Found:
    found = Found("pairs")
    roles = [source, *targets, *([cost_map] if cost_map else [])]
    groups: dict[str, dict[str, Path]] = {}
    for path in sorted(root.iterdir()):
        stem = image_stem(path, suffixes)
        role = next(
            (r for r in sorted(roles, key=len, reverse=True) if stem and stem.endswith(f"_{r}")),
            None,
        )
        if stem is not None and role is not None:
            groups.setdefault(stem[: -len(role) - 1], {})[role] = path
    pairs = []
    for name, files in groups.items():
        if source not in files:
            found.problems += [
                f"{files[r]} has no matching input image {name}_{source}.* in {root}"
                for r in targets
                if r in files
            ]
            continue
        lacking = [t for t in targets if t not in files]
        for t in lacking:
            found.problems.append(f"{files[source]} has no matching target {name}_{t}.* in {root}")
        if not lacking:
            pairs.append(
                Pair(
                    name,
                    files[source],
                    {t: files[t] for t in targets},
                    files.get(cost_map) if cost_map else None,
                )
            )
    if not groups:
        found.problems.append(f"{root} holds no files named NAME_{source}.tif (layout 'pairs')")
    found.pairs[None] = pairs
    return found


def _from_csv(
    path: Path, source: str, targets: Sequence[str], cost_map: str | None, split_column: str
) -> Found:
    found = Found("csv")
    if path.is_file():
        _read_csv(path, None, found, source, targets, cost_map, split_column)
        return found
    manifests = {name: split for name, split in SPLIT_FILES.items() if (path / name).is_file()}
    if manifests:
        for name, split in manifests.items():
            _read_csv(path / name, split, found, source, targets, cost_map, split_column)
    else:
        # A folder with exactly one CSV file (detect_layout made sure of it).
        _read_csv(next(path.glob("*.csv")), None, found, source, targets, cost_map, split_column)
    return found


def _read_csv(
    path: Path,
    split: str | None,
    found: Found,
    source: str,
    targets: Sequence[str],
    cost_map: str | None,
    split_column: str,
) -> None:
    try:
        text = read_text(path, what="CSV manifest", limit=MAX_TABLE_BYTES, encoding="utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        columns = list(rows[0]) if rows else []
    except UserError as exc:
        found.problems.append(str(exc))
        return
    except (OSError, csv.Error) as exc:
        found.problems.append(f"cannot read CSV {path}: {exc}")
        return
    missing = [c for c in (source, *targets) if c not in columns]
    if missing or not rows:
        what = f"no column {', '.join(repr(m) for m in missing)}" if missing else "no rows"
        found.problems.append(f"{path} has {what} (columns: {', '.join(columns) or 'none'})")
        return
    has_split = split is None and split_column in columns
    wanted = [
        source,
        *targets,
        *([cost_map] if cost_map is not None and cost_map in columns else []),
    ]
    for line, row in enumerate(rows, start=2):
        where = f"{path} line {line}"
        files: dict[str, Path] = {}
        for column in wanted:
            cell = (row.get(column) or "").strip()
            if not cell:
                if column != cost_map:
                    found.problems.append(f"{where}: no path in column '{column}'")
                continue
            try:
                file = user_path(cell, f"{where} (column '{column}')")
            except UserError as exc:
                found.problems.append(str(exc))
                continue
            file = file if file.is_absolute() else path.parent / file
            if not _exists(file):
                found.problems.append(f"{where}: file not found: {file} (column '{column}')")
            files[column] = file
        row_split = split
        if has_split:
            value = (row.get(split_column) or "").strip().lower()
            row_split = SPLIT_NAMES.get(value)
            if row_split is None:
                found.problems.append(
                    f"{where}: {split_column} '{value}' is not train, val or test"
                )
                continue
        complete = all(c in files for c in (source, *targets))
        if complete and all(_exists(f) for f in files.values()):
            name = (
                files[source].relative_to(path.parent).as_posix()
                if files[source].is_relative_to(path.parent)
                else str(files[source])
            )
            cost = files.get(cost_map) if cost_map is not None else None
            pair = Pair(name, files[source], {t: files[t] for t in targets}, cost)
            found.pairs.setdefault(row_split, []).append(pair)


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a name too long for the file system does not."""
    try:
        return path.exists()
    except OSError:
        return False


def seeded_split(
    pairs: Iterable[Pair], val_fraction: float, seed: int
) -> tuple[list[Pair], list[Pair]]:
    """(train, val): ``val_fraction`` of the files, drawn with ``seed``; at least one of each
    when there are two files or more and the fraction is positive."""
    ordered = sorted(pairs, key=lambda p: p.name)
    n_val = round(val_fraction * len(ordered))
    if val_fraction > 0 and len(ordered) >= 2:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    held_out = set(np.random.default_rng(seed).permutation(len(ordered))[:n_val].tolist())
    train = [p for i, p in enumerate(ordered) if i not in held_out]
    val = [p for i, p in enumerate(ordered) if i in held_out]
    return train, val


def find_splits(
    data: DataConfig,
    heads: Mapping[str, HeadConfig],
    *,
    seed: int = 0,
    run_dir: Path | None = None,
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
) -> Splits:
    """The train/val/test pairs of ``data.path`` (+ ``data.val_path``), problems collected.

    A seeded split is written to ``run_dir/split.json`` when ``run_dir`` is given. Unpaired
    data's target files are found and split on their own (``Splits.unpaired_targets``).
    """
    if data.path is None:
        problem = "data.path is not set: give the folder or CSV manifest of the training images"
        return Splits(None, layout=data.layout.name, problems=[problem])
    if not data.unpaired:
        splits, seeded = _find_splits(
            data, data.source, target_names(heads), data.cost_map, seed, suffixes
        )
    else:
        # Cost maps weight a target's pixels, which no input pixel matches: none are looked for.
        splits, seeded = _find_splits(data, data.source, [], None, seed, suffixes)
        for target in target_names(heads):
            found, _ = _find_splits(data, target, [], None, seed, suffixes)
            splits.unpaired_targets[target] = found
            splits.problems += found.problems
    if seeded and run_dir is not None:
        write_split(splits, run_dir / "split.json", seed=seed, val_fraction=data.val_fraction)
    return splits


def _find_splits(
    data: DataConfig,
    source: str,
    targets: Sequence[str],
    cost_map: str | None,
    seed: int,
    suffixes: Sequence[str],
) -> tuple[Splits, bool]:
    """The splits of ``source`` (with ``targets``), and whether they are a seeded split."""
    splits = Splits(data.path, layout=data.layout.name)
    options = {
        "layout": data.layout.name,
        "source": source,
        "targets": targets,
        "cost_map": cost_map,
        "split_column": data.split_column,
        "suffixes": suffixes,
    }
    found = find_pairs(Path(data.path), **options)  # type: ignore[arg-type]
    splits.layout = found.layout
    splits.problems += found.problems
    given = {k: v for k, v in found.pairs.items() if k is not None}
    unsplit = found.pairs.get(None, [])
    splits.train = given.get("train", []) + (unsplit if data.val_path is not None or given else [])
    splits.test = given.get("test", [])
    if data.val_path is not None:
        val_found = find_pairs(Path(data.val_path), **options)  # type: ignore[arg-type]
        splits.problems += val_found.problems
        splits.val = [p for pairs in val_found.pairs.values() for p in pairs]
    elif given:
        splits.val = given.get("val", [])
    else:
        splits.train, splits.val = seeded_split(unsplit, data.val_fraction, seed)
    if not splits.train and not found.problems:
        splits.problems.append(f"dataset {data.path} has no training images")
    return splits, data.val_path is None and not given


def write_split(splits: Splits, file: Path, *, seed: int, val_fraction: float) -> None:
    """Record which files went where, so a run's split can be read back and audited."""

    def files(splits: Splits) -> dict[str, dict[str, str]]:
        return {
            split: {p.name: str(p.image) for p in pairs}
            for split, pairs in splits.by_split().items()
        }

    record: dict[str, object] = {
        "path": str(splits.path),
        "seed": seed,
        "val_fraction": val_fraction,
        **files(splits),
    }
    if splits.unpaired_targets:
        record["unpaired_targets"] = {t: files(s) for t, s in splits.unpaired_targets.items()}
    # Atomic: every DDP rank writes the same record, and a reader never sees half of one.
    write_text(file, json.dumps(record, indent=2) + "\n")
