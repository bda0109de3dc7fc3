"""Scan a preset's dataset without training: what is there, and every problem at once.

``bioim2im check PRESET --data`` runs::

    report = preflight(preset)
    console.print(report)            # a summary table (the report is a rich renderable)
    ensure_usable(report)            # UserError listing every problem, if any

Each problem names the file(s) concerned and what was expected. Files larger than
``FULL_SCAN_VOXELS`` are scanned on an evenly strided subsample (marked in the report).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bioim2im.data.sources import find_splits, reader_suffixes
from bioim2im.data.volumes import Entry, HeadTarget, Preparation, View, open_entries, too_small
from bioim2im.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

    from bioim2im.config.schema import Preset
    from bioim2im.plugin.registry import ComponentRegistry

FULL_SCAN_VOXELS = 1 << 28
BLOCK_VOXELS = 1 << 24
# At most this many distinct bad label values are quoted per file.
QUOTED_VALUES = 5
# A mask for a one-channel semantic head holding more distinct non-zero values than this looks
# like object ids (or classes): every non-zero value is foreground to that head.
MASK_VALUES = 1


@dataclass
class FileSummary:
    """One file of one entry as scanned."""

    split: str
    entry: str
    role: str
    path: str
    shape: tuple[int, ...]
    axes: str
    dtype: str
    low: float
    high: float
    subsampled: bool


@dataclass
class Report:
    """What :func:`preflight` found."""

    path: Path | None
    layout: str
    pairs: dict[str, int] = field(default_factory=dict)
    """Pairs of files per split."""
    entries: dict[str, int] = field(default_factory=dict)
    """Training images per split (a file with T or S axes gives one per time point / scene)."""
    files: list[FileSummary] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What is usable but looks unintended (shown; `check --data` still passes)."""
    prep: Preparation | None = None
    """The preset's preparation, when it could be built."""
    opened: dict[str, list[Entry]] = field(default_factory=dict)
    """The usable entries of each split (what training datasets are made of)."""
    opened_targets: dict[str, dict[str, list[Entry]]] = field(default_factory=dict)
    """Unpaired data only: per target name, the usable target entries of each split."""
    found: dict[str, list[str]] = field(default_factory=dict)
    """Per split, one line per item a layout found and names (e.g. crops of large volumes), printed."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from report_renderables(self)


def preflight(
    preset: Preset,
    *,
    registry: ComponentRegistry | None = None,
    run_dir: Path | None = None,
    scan: bool = True,
) -> Report:
    """What ``preset``'s data layout (``data.layout``) finds in its dataset, and every problem
    (see :func:`image_preflight` for the built-in layouts of image files)."""
    from bioim2im.data.layouts import dataset_layout

    if registry is None:
        from bioim2im.plugin.manager import get_registry

        registry = get_registry()
    layout = dataset_layout(preset, registry)
    report: Report = layout.preflight(preset, registry=registry, run_dir=run_dir, scan=scan)
    return report


def image_preflight(
    preset: Preset,
    *,
    registry: ComponentRegistry,
    run_dir: Path | None = None,
    scan: bool = True,
) -> Report:
    """Find, open and (``scan``) read through ``preset``'s image files: files per split, shapes,
    dtypes, value ranges, and every problem. The opened entries are kept in the report for the
    training datasets; a seeded split is written to ``run_dir/split.json`` when given."""
    from bioim2im.data.dataset import unpaired_preparation
    from bioim2im.data.preparation import augmentation, preparation

    data = preset.data
    splits = find_splits(
        data,
        preset.model.heads,
        seed=preset.train.seed,
        run_dir=run_dir,
        suffixes=reader_suffixes(registry),
    )
    report = Report(data.path, splits.layout, problems=list(splits.problems))
    try:
        augmentation(preset, registry)
    except UserError as exc:
        report.problems.append(str(exc))
    try:
        prep = preparation(preset, registry)
    except UserError as exc:
        report.problems.append(str(exc))
        return report
    report.prep = prep
    opened: list[Entry] = []
    for split, pairs in splits.by_split().items():
        if not pairs:
            continue
        entries, problems = open_entries(pairs, prep, registry)
        report.pairs[split] = len(pairs)
        report.entries[split] = len(entries)
        report.opened[split] = entries
        report.problems += problems
        if scan:
            for entry in entries:
                report.problems += _scan(entry, split, prep, report)
        opened += entries
    # Unpaired target files are images of their own, scanned like the inputs under their name.
    head_of = {head.target: head for head in prep.heads}
    for target, target_splits in splits.unpaired_targets.items():
        target_prep = unpaired_preparation(prep, head_of[target])
        for split, pairs in target_splits.by_split().items():
            entries, problems = open_entries(pairs, target_prep, registry)
            report.problems += problems
            report.opened_targets.setdefault(target, {})[split] = entries
            if scan:
                for entry in entries:
                    report.problems += _scan(entry, split, target_prep, report, image_role=target)
            opened += entries
    if splits.train and not report.entries.get("train"):
        report.problems.append(
            f"dataset {data.path}: none of the {len(splits.train)} training pair(s) is usable"
        )
    small = None if data.pad else too_small(opened, data.patch_size)
    if small:
        report.problems.append(small)
    return report


def _blocks(view: View) -> tuple[list[list[slice]], bool]:
    """Regions covering the view in blocks of about BLOCK_VOXELS, strided when it is large."""
    total = view.channels * math.prod(view.shape)
    step = max(1, math.ceil(total / FULL_SCAN_VOXELS))
    first = view.shape[0]
    per_block = max(1, BLOCK_VOXELS * step // max(1, total // first))
    rest = [slice(None)] * (len(view.shape) - 1)
    return [
        [slice(i, min(i + per_block, first), step), *rest] for i in range(0, first, per_block)
    ], step > 1


@dataclass
class _Scan:
    low: float = math.inf
    high: float = -math.inf
    non_finite: int = 0
    bad: dict[str, set[float]] = field(default_factory=dict)
    """Label values each head cannot train on (a few quoted per head)."""
    foreground: set[float] = field(default_factory=set)
    """Distinct non-zero whole-number values (a few), for one-channel semantic heads."""
    subsampled: bool = False


def _scan_view(view: View, heads: Sequence[HeadTarget], masks: Sequence[HeadTarget] = ()) -> _Scan:
    scan = _Scan(bad={h.head: set() for h in heads})
    ignored = {h.ignore_value for h in masks if h.ignore_value is not None}
    regions, scan.subsampled = _blocks(view)
    for region in regions:
        block = view.read(region)
        finite = np.isfinite(block)
        values = block if finite.all() else block[finite]
        scan.non_finite += block.size - values.size
        if values.size:
            scan.low = min(scan.low, float(values.min()))
            scan.high = max(scan.high, float(values.max()))
        for head in heads:
            if len(scan.bad[head.head]) < QUOTED_VALUES:
                scan.bad[head.head] |= set(_unexpected(values, head)[:QUOTED_VALUES].tolist())
        if masks and len(scan.foreground) <= QUOTED_VALUES:
            found = np.unique(values[(values != 0) & (values == np.round(values))])
            scan.foreground |= {v for v in found[: QUOTED_VALUES + 1].tolist() if v not in ignored}
    return scan


def _unexpected(values: np.ndarray, head: HeadTarget) -> np.ndarray:
    """Label values ``head`` cannot train on: not integers, negative, or beyond its classes."""
    if head.ignore_value is not None:
        values = values[values != head.ignore_value]
    bad = (values != np.round(values)) | (values < 0)
    if head.task == "semantic":
        bad |= values > head.out_channels - 1
    return np.unique(values[bad])


def _expectation(head: HeadTarget) -> str:
    if head.task == "semantic":
        return f"classes 0..{head.out_channels - 1} of semantic head '{head.head}' (out_channels = {head.out_channels})"
    return f"object ids 0, 1, 2, ... of instance head '{head.head}'"


def _scan(
    entry: Entry, split: str, prep: Preparation, report: Report, image_role: str = "image"
) -> list[str]:
    problems = []
    views = [(image_role, entry.image), *entry.targets.items()]
    if entry.cost_map is not None:
        views.append(("cost map", entry.cost_map))
    for role, view in views:
        # Binary semantic targets take any value (> 0 is foreground); others must be classes / ids.
        checked = [
            h
            for h in prep.heads
            if h.target == role
            and h.is_label
            and not (h.task == "semantic" and h.out_channels == 1)
        ]
        # A one-channel semantic head takes any value, but ids 1, 2, 3... are likely a mistake.
        masks = [
            h
            for h in prep.heads
            if h.target == role and h.is_label and h.task == "semantic" and h.out_channels == 1
        ]
        try:
            scan = _scan_view(view, checked, masks)
        except UserError as exc:
            problems.append(str(exc))
            continue
        lazy = view.image
        report.files.append(
            FileSummary(
                split,
                entry.name,
                role,
                view.path,
                lazy.shape,
                lazy.axes,
                str(lazy.dtype),
                scan.low,
                scan.high,
                scan.subsampled,
            )
        )
        where = view.path + "".join(f" {a}={i}" for a, i in view.fixed.items())
        if view is entry.image and scan.non_finite and prep.nan_policy == "error":
            problems.append(
                f'{where}: {scan.non_finite} NaN or Inf value(s) in the image; fix the file or set data.nan_policy = "zero"'
            )
        if role == "cost map" and (scan.non_finite or scan.low < 0):
            problems.append(
                f"{where}: a cost map must hold finite values >= 0 (found {scan.low:g} .. {scan.high:g})"
            )
        if masks and len(scan.foreground) > MASK_VALUES:
            report.warnings.append(_looks_like_ids(where, scan.foreground, masks))
        for head in checked:
            if scan.bad[head.head]:
                quoted = ", ".join(f"{v:g}" for v in sorted(scan.bad[head.head]))
                problems.append(
                    f"{where}: label values {quoted} are outside the {_expectation(head)}"
                )
    return problems


def _looks_like_ids(where: str, values: set[float], heads: Sequence[HeadTarget]) -> str:
    shown = sorted(values)
    quoted = ", ".join(f"{v:g}" for v in shown[:QUOTED_VALUES])
    more = "" if len(shown) <= QUOTED_VALUES else ", ..."
    names = ", ".join(f"'{h.head}'" for h in heads)
    return (
        f"{where}: labels hold {'more than ' if more else ''}{min(len(shown), QUOTED_VALUES)} "
        f"distinct non-zero values ({quoted}{more}), like object ids or classes, but the "
        f"one-channel semantic head(s) {names} count every non-zero value as foreground; for "
        'objects use task = "instance" (e.g. the instance-2d preset), for classes set '
        "out_channels to their number"
    )


def ensure_usable(report: Report) -> None:
    """Raise a UserError listing every problem of ``report``, if it has any."""
    if report.problems:
        noun = "problem" if len(report.problems) == 1 else "problems"
        raise UserError(
            f"dataset {report.path} has {len(report.problems)} {noun}:", report.problems
        )


def report_renderables(report: Report) -> Iterator[Any]:
    """A summary of ``report``: per split and file role, what was found; then its verdict."""
    from rich.table import Table
    from rich.text import Text

    title = f"dataset {report.path} (layout '{report.layout}')"
    table = Table(
        "split",
        "role",
        "files",
        "images",
        "shapes (axes)",
        "dtypes",
        "values",
        title=title,
        title_justify="left",
        header_style="bold",
    )
    groups: dict[tuple[str, str], list[FileSummary]] = {}
    for summary in report.files:
        groups.setdefault((summary.split, summary.role), []).append(summary)
    for (split, role), files in groups.items():
        shapes = sorted({f"{'x'.join(map(str, f.shape))} ({f.axes})" for f in files})
        shown = ", ".join(shapes[:3]) + (f", +{len(shapes) - 3} more" if len(shapes) > 3 else "")
        low = min(f.low for f in files)
        high = max(f.high for f in files)
        values = f"{low:.4g} .. {high:.4g}" + (
            " (subsampled)" if any(f.subsampled for f in files) else ""
        )
        table.add_row(
            split,
            role,
            str(len({f.path for f in files})),
            str(report.entries.get(split, 0)) if role == "image" else "",
            shown,
            ", ".join(sorted({f.dtype for f in files})),
            values,
        )
    yield table
    for split, lines in report.found.items():
        yield Text.from_markup(f"[bold]{split}[/] ({len(lines)}):")
        for line in lines:
            yield Text(f"  {line}")
    for warning in report.warnings:
        yield Text.from_markup("[bold yellow]warning:[/] ") + Text(warning)
    if report.problems:
        yield Text.from_markup(
            f"[bold red]{len(report.problems)} problem(s)[/] found in the dataset"
        )
    else:
        pairs = ", ".join(f"{n} {split}" for split, n in report.pairs.items())
        yield Text.from_markup(f"[green]✓[/] dataset is usable: {pairs} pair(s)")
