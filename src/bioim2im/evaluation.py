"""Score predictions against their ground truth, image by image: the engine of ``bioim2im evaluate``.

Pairing. ``pred`` and ``truth`` are each one image (a TIFF file or a zarr container) or a folder
of images; a truth folder holding a ``GT/`` folder (a dataset root) stands for that ``GT/``.

- Two single images are paired as they are, whatever their names.
- Otherwise images pair by name, file type left out: ``a.tif``, ``a.ome.tiff``, ``a.zarr`` and
  ``a.ome.zarr`` are all named ``a``. A prediction ``<name>_<head>`` (what ``bioim2im predict
  --format tiff`` writes) pairs with the truth ``<name>``. With ``head`` given, predictions of
  other heads are ignored; without it, several predictions for one truth are an error that asks
  for a head.
- A zarr container holding one image per head (``a.ome.zarr/<head>``, label images under
  ``a.ome.zarr/labels/<head>``, what ``bioim2im predict``
  writes) is read at ``head``, or at its only image.
- When one side is a single image, the other side's other images are ignored. When both are
  folders, images without a partner are listed in the report; no pair at all is an error.

Reading. Axes of size 1 other than Y and X are dropped (one channel, one time point, one
slice); a time axis longer than 1 is scored as one more dimension. Prediction and truth must
then have the same shape. Semantic and instance scoring (and a plugin's label scoring) compare
labels: floating-point images are accepted when they hold whole numbers only (e.g. a
thresholded mask saved as float).

Task (``task="auto"``), decided once for all images, from what they hold:

- ``regression`` when a truth is floating-point or a prediction holds non-whole values;
- otherwise ``semantic`` when ``classes`` are given;
- otherwise ``instance`` when some truth has more than :data:`MAX_SEMANTIC_CLASSES` distinct
  non-zero labels (that many are objects, not classes);
- otherwise ``semantic``.

A plugin's evaluation task (``bioim2im_register_evaluations``) may score label images with
its own metrics through the same pairing, reading and reports: ``evaluate(..., task=NAME,
scoring=...)``, see :data:`LabelScoring`.

Distances (instance ``hausdorff``, and a plugin's) are in the units of ``voxel_size`` when
given, else in micrometers when the truth file records its voxel size, else in pixels.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from bioim2im.errors import UserError
from bioim2im.io import ngff, open_image
from bioim2im.io.atomic import atomic_file, check_output_file, refuse_inputs
from bioim2im.io.base import beyond_memory
from bioim2im.metrics import aggregate, compute

TASKS = ("semantic", "instance", "regression")

MAX_SEMANTIC_CLASSES = 8
"""The most distinct non-zero labels a truth may hold for ``task="auto"`` to call it semantic."""

INSTANCE_COLUMNS = (
    "ap@0.50",
    "f1@0.50",
    "precision@0.50",
    "recall@0.50",
    "ap@0.50:0.95",
    "pq@0.50",
    "mean_matched_iou@0.50",
    "hausdorff",
)
"""The instance metrics :func:`render_report` shows; the JSON and CSV files hold them all."""

# How many file names an error or a warning lists before "... and N more".
_LISTED = 10


@dataclass(frozen=True)
class ImagePair:
    """A prediction and its truth; ``name`` is the truth's name without file type."""

    name: str
    pred: Path
    truth: Path


VoxelSize = float | Sequence[float] | None
LabelScore = Callable[[np.ndarray, np.ndarray, VoxelSize], dict[str, float]]
"""Scores of one pair: ``score(prediction, truth, voxel_size)`` on integer label arrays of one
shape (``voxel_size``: the one given, else the truth's, else None)."""
LabelScoring = Callable[[Sequence[ImagePair]], tuple[LabelScore, str]]
"""A plugin's scoring of label images: called once with every pair (before any is scored, e.g.
to choose how by :func:`most_labels`), it returns the function scoring one pair and a note
saying how it scores, added to the report's ``task_reason``."""


@dataclass
class EvaluationReport:
    """Metrics per image (``rows``: ``name`` then metrics) and their means over images.

    ``task_reason`` says why ``task`` was used ("given", or the automatic rule that chose it).
    """

    task: str
    rows: list[dict[str, Any]]
    aggregate: dict[str, float]
    pairs: list[ImagePair]
    task_reason: str = "given"
    unmatched_predictions: list[Path] = field(default_factory=list)
    unmatched_truths: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON document: task, images, aggregate, unmatched; NaN and inf become null."""
        return {
            "task": self.task,
            "images": [_finite_or_none(row) for row in self.rows],
            "aggregate": _finite_or_none(self.aggregate),
            "unmatched": {
                "predictions": [str(p) for p in self.unmatched_predictions],
                "truths": [str(p) for p in self.unmatched_truths],
            },
        }

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from report_renderables(self)


def evaluate(
    pred: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    *,
    task: str = "auto",
    head: str | None = None,
    classes: Sequence[int] | None = None,
    voxel_size: float | Sequence[float] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    csv_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    scoring: LabelScoring | None = None,
) -> EvaluationReport:
    """Pair predictions with truths, score every pair, and write the JSON and CSV reports asked for.

    An existing report file is replaced only with ``overwrite``; a report path that is (or lies
    inside, or holds) ``pred`` or ``truth`` never is.

    ``task``: ``auto`` or one of :data:`TASKS`, or with ``scoring`` (a plugin's scoring of
    label images, :data:`LabelScoring`) the name its report is given; ``classes``: the semantic
    classes to score (default: those present in each image); ``voxel_size``: one value, or one
    per spatial axis, for distances. See the module docstring for the pairing and
    automatic-task rules.
    """
    if scoring is None and task != "auto" and task not in TASKS:
        raise UserError(f"unknown task '{task}' (valid: auto, {', '.join(TASKS)})")
    # Where the reports go is checked before any work, and never taken from what exists there.
    reports = [("--json", json_path), ("--csv", csv_path)]
    for option, target in reports:
        if target is not None:
            check_output_file(Path(target), option, overwrite=overwrite)
    if json_path is not None and csv_path is not None:
        ordered = sorted((Path(json_path).absolute(), Path(csv_path).absolute()))
        if ordered[0] == ordered[1] or ordered[0] in ordered[1].parents:
            raise UserError(
                f"--json {json_path} and --csv {csv_path}: give two files, neither inside the other"
            )
    pairs, unmatched_predictions, unmatched_truths = find_pairs(Path(pred), Path(truth), head=head)
    # Nor is a report one of the images read, nor inside one (a folder of them may hold it).
    read: list[str | os.PathLike[str]] = [p for pair in pairs for p in (pair.pred, pair.truth)]
    read += [*unmatched_predictions, *unmatched_truths]
    read += [given for given in (pred, truth) if not Path(given).is_dir()]
    for option, target in reports:
        if target is not None:
            refuse_inputs(target, read, option)
    if task == "auto" and scoring is None:
        task, reason = choose_task(pairs, classes)
    else:
        reason = "given"
    if classes is not None and task != "semantic":
        raise UserError(f"classes apply to the semantic task only, not to {task}")
    score_labels = None
    if scoring is not None:
        score_labels, note = scoring(pairs)
        reason += f"; {note}" if note else ""

    rows: list[dict[str, Any]] = []
    for pair in pairs:
        try:
            scores = _score(
                pair, task, classes=classes, voxel_size=voxel_size, score_labels=score_labels
            )
        except ValueError as exc:
            raise UserError(f"cannot score {pair.pred} against {pair.truth}: {exc}") from exc
        rows.append({"name": pair.name, **scores})

    report = EvaluationReport(
        task=task,
        rows=rows,
        aggregate=aggregate([{k: v for k, v in row.items() if k != "name"} for row in rows]),
        pairs=pairs,
        task_reason=reason,
        unmatched_predictions=unmatched_predictions,
        unmatched_truths=unmatched_truths,
    )
    if json_path is not None:
        write_json(report, Path(json_path))
    if csv_path is not None:
        write_csv(report, Path(csv_path))
    return report


# --- pairing -------------------------------------------------------------------------------


def find_pairs(
    pred: Path, truth: Path, *, head: str | None = None
) -> tuple[list[ImagePair], list[Path], list[Path]]:
    """The pairs to score, then the predictions and the truths left without a partner."""
    suffixes = _readable_suffixes()
    preds, single_pred = _images(pred, "prediction", suffixes)
    truths, single_truth = _images(truth, "truth", suffixes)
    if single_pred and single_truth:
        pairs = [ImagePair(truths[0][0], pred, truth)]
        lone_preds: list[Path] = []
        lone_truths: list[Path] = []
    else:
        pairs, lone_preds, lone_truths = _pair_by_name(preds, truths, head)
    if not pairs:
        raise UserError(
            f"no prediction in {pred} matches a truth in {truth} by name",
            [
                f"predictions: {_listing(p.name for _, p in preds)}",
                f"truths: {_listing(t.name for _, t in truths)}",
            ],
        )
    pairs = [ImagePair(p.name, _image_in(p.pred, head), _image_in(p.truth, head)) for p in pairs]
    if single_pred or single_truth:
        # One image was asked for: the other images of the folder are not missing, just not asked.
        return pairs, [], []
    return pairs, lone_preds, lone_truths


def _readable_suffixes() -> list[str]:
    """File types some registered reader opens, longest first so ``.ome.tif`` wins over ``.tif``."""
    from bioim2im.plugin.manager import get_registry

    found = {
        suffix.lower()
        for component in get_registry()
        if component.kind == "reader"
        for suffix in component.extras.get("suffixes", ())
    }
    return sorted(found, key=len, reverse=True)


def _name(path: Path, suffixes: Sequence[str]) -> str | None:
    """The file name without its file type, or None when no reader knows the type."""
    lower = path.name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def _images(path: Path, side: str, suffixes: Sequence[str]) -> tuple[list[tuple[str, Path]], bool]:
    """The images ``path`` stands for, named, and whether it is one image rather than a folder."""
    if not path.exists():
        raise UserError(f"{side} path {path} does not exist")
    name = _name(path, suffixes)
    if name is not None:
        return [(name, path)], True
    if not path.is_dir():
        raise UserError(f"{path}: not an image (readable file types: {', '.join(suffixes)})")
    if side == "truth" and (path / "GT").is_dir():
        path = path / "GT"
    images = []
    for child in sorted(path.iterdir()):
        name = _name(child, suffixes)
        # Hidden entries include the unfinished outputs of a running prediction.
        if name is not None and not child.name.startswith("."):
            images.append((name, child))
    if not images:
        raise UserError(f"no images in {path} (readable file types: {', '.join(suffixes)})")
    return images, False


def _pair_by_name(
    preds: list[tuple[str, Path]], truths: list[tuple[str, Path]], head: str | None
) -> tuple[list[ImagePair], list[Path], list[Path]]:
    truth_by_name: dict[str, Path] = {}
    for name, path in truths:
        if name in truth_by_name:
            raise UserError(f"two truths are named '{name}'", [str(truth_by_name[name]), str(path)])
        truth_by_name[name] = path

    # Every prediction that names a truth, with the head its name carries (None: no head).
    candidates: dict[str, list[tuple[Path, str | None]]] = {}
    lone_preds = []
    for pred_name, path in preds:
        match = _truth_name(pred_name, truth_by_name, head)
        if match is None:
            lone_preds.append(path)
        else:
            candidates.setdefault(match[0], []).append((path, match[1]))

    pairs, lone_truths = [], []
    for name, truth in truth_by_name.items():
        found = candidates.get(name, [])
        if head is not None:
            # Files of other heads are other outputs of the same model, not extras.
            found = [c for c in found if c[1] == head] or [c for c in found if c[1] is None]
        if len(found) > 1:
            heads = sorted(h for _, h in found if h is not None)
            raise UserError(
                f"several predictions match the truth {truth}; choose one with --head"
                + (f" (heads: {', '.join(heads)})" if heads else ""),
                [str(p) for p, _ in found],
            )
        if found:
            pairs.append(ImagePair(name, found[0][0], truth))
        else:
            lone_truths.append(truth)
    return pairs, lone_preds, lone_truths


def _truth_name(
    pred_name: str, truth_names: dict[str, Path], head: str | None
) -> tuple[str, str | None] | None:
    """The truth a prediction is for and the head its name carries, or None.

    ``<name>_<head>`` for the given head first, then the exact name, then the longest
    ``<name>`` before an underscore, the rest being a head.
    """
    if head is not None and pred_name.endswith(f"_{head}"):
        base = pred_name[: -len(head) - 1]
        if base in truth_names:
            return base, head
    if pred_name in truth_names:
        return pred_name, None
    cuts = [i for i, char in enumerate(pred_name) if char == "_"]
    for cut in reversed(cuts):
        if pred_name[:cut] in truth_names:
            return pred_name[:cut], pred_name[cut + 1 :]
    return None


def _image_in(path: Path, head: str | None) -> Path:
    """The image to read in ``path``: itself, or its image named ``head``, or its only image."""
    if not path.is_dir():
        return path
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except PermissionError:
        raise
    except Exception:  # damaged metadata fails in many ways
        return path  # open_image says what is wrong with it
    if isinstance(node, zarr.Array):
        return path
    images = ngff.container_images(node)
    if images is None:
        return path
    heads = sorted(images)
    if head is not None:
        if head not in heads:
            raise UserError(f"{path} has no head '{head}' (heads: {', '.join(heads) or 'none'})")
        return path / images[head]
    if len(heads) == 1:
        return path / images[heads[0]]
    if not heads:
        return path
    raise UserError(
        f"{path} holds several heads; choose one with --head (heads: {', '.join(heads)})"
    )


def _listing(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_LISTED])
    more = len(names) - _LISTED
    return f"{shown}, ... and {more} more" if more > 0 else shown or "none"


# --- reading and scoring -------------------------------------------------------------------


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """The pixels without axes of size 1 (except Y and X), and the voxel size of what is left."""
    image = open_image(path)
    whole = math.prod(image.shape) * np.dtype(image.dtype).itemsize
    problem = beyond_memory(path, whole, "scoring reads each image whole")
    if problem is not None:
        image.close()
        raise UserError(f"{problem}; score a crop of it")
    try:
        array = image.read()
    finally:
        image.close()
    kept = [i for i, n in enumerate(array.shape) if n > 1 or image.axes[i] in "YX"]
    spatial = [a for a in image.axes if a in "ZYX"]
    kept_spatial = {image.axes[i] for i in kept} & set("ZYX")
    array = array.reshape([array.shape[i] for i in kept])
    if image.voxel_size is None:
        return array, None
    size = tuple(s for a, s in zip(spatial, image.voxel_size, strict=True) if a in kept_spatial)
    # With a time axis left, the voxel size no longer covers every axis: distances in pixels.
    return array, size if len(size) == array.ndim else None


def _read_pair(pair: ImagePair) -> tuple[np.ndarray, np.ndarray, tuple[float, ...] | None]:
    """Prediction, truth (same shape) and the truth's voxel size."""
    prediction, _ = _read(pair.pred)
    truth, voxel_size = _read(pair.truth)
    if prediction.shape != truth.shape:
        raise UserError(
            f"prediction and truth differ in shape: {pair.pred} is {prediction.shape}, "
            f"{pair.truth} is {truth.shape}"
        )
    return prediction, truth, voxel_size


def most_labels(pairs: Sequence[ImagePair]) -> int:
    """The most distinct non-zero labels a truth of ``pairs`` holds (0 for floating-point
    truths)."""
    return max(_survey(pair)[2] for pair in pairs)


def _survey(pair: ImagePair) -> tuple[bool, bool, int]:
    """Whether the truth is floating-point, whether the prediction holds non-whole values, and
    how many distinct non-zero labels the truth has."""
    prediction, truth, _ = _read_pair(pair)
    truth_float = truth.dtype.kind == "f"
    pred_fractional = prediction.dtype.kind == "f" and not _whole(prediction)
    labels = 0 if truth_float else int(np.count_nonzero(np.unique(truth)))
    return truth_float, pred_fractional, labels


def choose_task(pairs: Sequence[ImagePair], classes: Sequence[int] | None) -> tuple[str, str]:
    """The task for ``task="auto"`` (the rule in the module docstring) and why it was chosen."""
    surveys = [(pair, *_survey(pair)) for pair in pairs]
    for pair, truth_float, pred_fractional, _ in surveys:
        if truth_float:
            return "regression", f"auto: the truth {pair.truth} is floating-point"
        if pred_fractional:
            return "regression", f"auto: the prediction {pair.pred} holds non-whole values"
    if classes is not None:
        return "semantic", "auto: classes were given"
    pair, *_, most = max(surveys, key=lambda survey: survey[3])
    if most > MAX_SEMANTIC_CLASSES:
        return "instance", (
            f"auto: the truth {pair.truth} has {most} labels, more than {MAX_SEMANTIC_CLASSES} "
            "classes"
        )
    return "semantic", f"auto: every truth has at most {max(most, 1)} labels"


def _whole(array: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(array)) and np.all(array == np.round(array)))


def _labels(array: np.ndarray, path: Path, task: str) -> np.ndarray:
    """The image as integer labels; whole-number floats are converted, others refused."""
    if array.dtype.kind != "f":
        return array
    if not _whole(array):
        raise UserError(
            f"{path} holds non-whole values ({array.dtype}), but {task} scoring compares labels: "
            "threshold or label it first, or evaluate with --task regression"
        )
    return array.astype(np.int64)


def _score(
    pair: ImagePair,
    task: str,
    *,
    classes: Sequence[int] | None,
    voxel_size: VoxelSize,
    score_labels: LabelScore | None = None,
) -> dict[str, float]:
    """Every metric of ``task`` (or of ``score_labels``) for one pair; distances use the
    truth's voxel size if none given."""
    prediction, truth, recorded_size = _read_pair(pair)
    sizes = recorded_size if voxel_size is None else voxel_size
    if task == "regression" and score_labels is None:
        bad = int(np.count_nonzero(~np.isfinite(prediction)))
        if bad:
            raise UserError(
                f"{pair.pred}: {bad} NaN or infinite value(s) in the prediction; regression "
                "metrics are computed on finite predictions only"
            )
        return compute("regression", prediction, truth)
    prediction, truth = _labels(prediction, pair.pred, task), _labels(truth, pair.truth, task)
    if score_labels is not None:
        return score_labels(prediction, truth, sizes)
    if task == "semantic":
        return compute("semantic", prediction, truth, classes=classes)
    return compute("instance", prediction, truth, voxel_size=sizes)


# --- output --------------------------------------------------------------------------------


def _finite_or_none(values: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN or infinity; null says "undefined" without breaking strict parsers.
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()
    }


def write_json(report: EvaluationReport, path: Path) -> None:
    """The report as JSON (:meth:`EvaluationReport.to_json`), written atomically."""
    text = json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n"
    with atomic_file(path) as partial:
        partial.write_text(text, encoding="utf-8")


def _columns(report: EvaluationReport) -> list[str]:
    """Every metric key in first-seen order (images may differ, e.g. in semantic classes)."""
    return list(dict.fromkeys(k for row in report.rows for k in row if k != "name"))


def write_csv(report: EvaluationReport, path: Path) -> None:
    """One row per image, then an ``aggregate`` row; columns ``name`` and every metric."""
    columns = _columns(report)
    with atomic_file(path) as partial, open(partial, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["name", *columns], restval="")
        writer.writeheader()
        writer.writerows(report.rows)
        writer.writerow({"name": "aggregate", **report.aggregate})


def report_renderables(report: EvaluationReport) -> Iterator[Any]:
    """A table of the main metrics per image and their means, then any unmatched images."""
    columns = _columns(report)
    if report.task == "instance":
        columns = [c for c in INSTANCE_COLUMNS if c in columns]
    table = Table(
        title=f"{report.task} metrics, {len(report.rows)} image(s)",
        # Text, not markup: the reason may hold paths with brackets.
        caption=Text(f"task {report.task} ({report.task_reason})"),
    )
    table.add_column("image")
    for column in columns:
        table.add_column(column, justify="right")
    for i, row in enumerate(report.rows):
        cells = [_cell(row.get(c)) for c in columns]
        table.add_row(Text(row["name"]), *cells, end_section=i == len(report.rows) - 1)
    table.add_row("aggregate", *(_cell(report.aggregate.get(c)) for c in columns), style="bold")
    yield table
    for side, paths in (
        ("prediction(s) without a truth", report.unmatched_predictions),
        ("truth(s) without a prediction", report.unmatched_truths),
    ):
        if paths:
            yield Text.assemble(
                ("warning: ", "yellow"),
                f"{len(paths)} {side}: {_listing(p.name for p in paths)}",
            )


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "-"
    return f"{value:.4f}" if math.isfinite(value) else str(value)
