"""``bioim2im cellmap evaluate`` (``evaluate --task cellmap``) over a whole submission, as the challenge scores it.

The truth is a zarr group of crops, ``<truth>/crop<N>/<class>``: one array per class (attributes
``voxel_size`` and ``translation`` in nm) or one multiscale group per class, and optionally
``<class>_mask`` arrays (1 where the truth is certain; both sides are multiplied by it, as the
challenge does). The submission is the zip ``bioim2im cellmap pack`` writes, or a zarr group of the same
layout. Each submitted array is brought onto its truth crop's grid (:mod:`bioim2im_cellmap.grids`),
counted per crop (:mod:`bioim2im_cellmap.metrics`), and the counts are pooled per class; a class
or crop the submission lacks is scored as missing. The JSON holds the overall scores, each
class's scores and pooled counts, and every crop's counts.

A single prediction file against one truth file (or folders of them, paired as ``bioim2im
evaluate`` pairs them) is scored by :func:`evaluate_one_class`: one class, named after ``head``
(else ``object``), as instances (``f1``, ``normalized_hausdorff_distance``, ``combined_score``)
when some truth has more than one non-zero label, else as a semantic mask (``iou``). The
challenge's ``overall_score`` is left out: with a single class it is always 0 (the geometric mean
with an empty kind); the score of the class's kind (``overall_instance_score`` or
``overall_semantic_score``) is kept. Distances are in the units of the truth's voxel size when
its file records one, else in pixels.
"""

from __future__ import annotations

import json
import math
import tempfile
import zipfile
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from bioim2im.errors import UserError
from bioim2im.io import remote
from bioim2im.io.multiscale import open_levels
from bioim2im_cellmap.classes import INSTANCE_CLASSES
from bioim2im_cellmap.grids import Grid, open_labels, resample
from bioim2im_cellmap.metrics import (
    combine,
    instance_counts,
    missing_counts,
    semantic_counts,
)

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

    from bioim2im.evaluation import EvaluationReport, ImagePair, LabelScore

FOLLOWS = "CellMap challenge evaluation after PR #211 (code of 2026-06-30)"
MASK_SUFFIX = "_mask"


@dataclass
class SubmissionScores:
    """The scores of a submission: overall, per class, per crop."""

    submission: str
    truth: str
    scores: dict[str, Any]
    """``overall_score``, ``overall_instance_score``, ``overall_semantic_score``, ``label_scores``."""
    crops: dict[str, dict[str, dict[str, Any]]]
    """Per truth crop and class: the counts and how the class was read."""
    missing_crops: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    """Submitted crops or classes the truth does not have."""

    def to_json(self) -> dict[str, Any]:
        return _finite(
            {
                "task": "cellmap",
                "follows": FOLLOWS,
                "submission": self.submission,
                "truth": self.truth,
                **{
                    k: self.scores[k]
                    for k in ("overall_score", "overall_instance_score", "overall_semantic_score")
                },
                "label_scores": self.scores["label_scores"],
                "crops": self.crops,
                "missing_crops": self.missing_crops,
                "ignored": self.ignored,
            }
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from score_renderables(self)


def is_truth_store(path: str | Path) -> bool:
    """Whether ``path`` looks like the challenge's truth: a zarr group holding crop groups."""
    try:
        node = remote.open_node(path)
    except UserError:
        return False
    return isinstance(node, zarr.Group) and any(
        name.startswith("crop") for name, _ in node.groups()
    )


def evaluate_submission(
    submission: str | Path,
    truth: str | Path,
    *,
    instance_classes: Collection[str] = INSTANCE_CLASSES,
    json_path: str | Path | None = None,
    overwrite: bool = False,
) -> SubmissionScores:
    """Score ``submission`` (zip or zarr group) against ``truth`` (see the module docstring);
    an existing ``json_path`` is replaced only with ``overwrite``, never an input."""
    if json_path is not None:
        from bioim2im.io.atomic import check_output_file

        check_output_file(
            Path(json_path), "--json", overwrite=overwrite, inputs=[submission, truth]
        )
    truth_group = remote.open_node(truth)
    if not isinstance(truth_group, zarr.Group):
        raise UserError(f"{truth}: the truth must be a zarr group of crop<N> groups")
    truth_crops = sorted(name for name, _ in truth_group.groups())
    if not truth_crops:
        raise UserError(f"{truth}: holds no crop groups")
    with _opened(Path(submission)) as (root, group):
        submitted = {_crop_name(name): name for name, _ in group.groups()}
        counts: dict[str, list[dict[str, Any]]] = {}
        crops: dict[str, dict[str, dict[str, Any]]] = {}
        ignored = sorted(name for crop, name in submitted.items() if crop not in truth_crops)
        for crop in truth_crops:
            source = submitted.get(crop)
            predicted = _labels(_subgroup(group, source)) if source is not None else []
            truth_labels = _labels(_subgroup(truth_group, crop))
            ignored += [f"{source}/{name}" for name in predicted if name not in truth_labels]
            crops[crop] = {}
            for name in truth_labels:
                truth_location = remote.join(str(truth), crop, name)
                pred_location = (
                    remote.join(str(root), source, name) if source and name in predicted else None
                )
                counted = _score(truth_location, pred_location, name in instance_classes)
                crops[crop][name] = counted
                counts.setdefault(name, []).append(counted)
    result = SubmissionScores(
        str(submission),
        str(truth),
        combine(counts, instance_classes),
        crops,
        missing_crops=[c for c in truth_crops if c not in submitted],
        ignored=ignored,
    )
    if json_path is not None:
        from bioim2im.io.atomic import atomic_file

        text = json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n"
        with atomic_file(Path(json_path)) as partial:
            partial.write_text(text, encoding="utf-8")
    return result


def _crop_name(name: str) -> str:
    # The challenge also accepts crops named by their number only.
    return name if name.startswith("crop") else f"crop{name}"


def _subgroup(group: zarr.Group, name: str) -> zarr.Group:
    node = group[name]
    if not isinstance(node, zarr.Group):
        raise UserError(f"{group.store_path}/{name}: an array, not a crop group")
    return node


def _labels(group: zarr.Group) -> list[str]:
    names = [*group.array_keys(), *(n for n, _ in group.groups())]
    return sorted(n for n in names if not n.endswith(MASK_SUFFIX))


def _score(truth_location: str, pred_location: str | None, instance: bool) -> dict[str, Any]:
    level = open_levels(truth_location)[0]
    grid = Grid.of(level)
    truth = level.read()
    base = {"voxel_size": list(grid.voxel_size), "num_voxels": int(truth.size)}
    if pred_location is None:
        return {**missing_counts(truth, instance), **base, "is_missing": True}
    pred = resample(open_labels(pred_location, grid), grid, instance=instance)
    mask_location = truth_location + MASK_SUFFIX
    try:
        mask = np.asarray(remote.open_array(mask_location)[...]) > 0
    except UserError:
        mask = None
    if mask is not None:
        # Uncertain regions of low-resolution annotations count for neither side.
        truth, pred = truth * mask, pred * mask
    counted = (
        instance_counts(pred, truth, grid.voxel_size) if instance else semantic_counts(pred, truth)
    )
    return {**counted, **base, "is_missing": False}


@contextmanager
def _opened(path: Path) -> Iterator[tuple[Path, zarr.Group]]:
    """The submission's zarr group (a zip is unpacked to a temporary folder first)."""
    if not path.exists():
        raise UserError(f"submission {path} does not exist")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise UserError(f"{path}: neither a zip file nor a zarr folder")
        with tempfile.TemporaryDirectory(prefix="bioim2im-submission-") as folder:
            try:
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(folder)
            except (OSError, zipfile.BadZipFile) as exc:
                raise UserError(f"{path}: cannot unpack the zip ({exc})") from None
            root = submission_root(Path(folder), path)
            yield root, _group(root, path)
        return
    yield path, _group(path, path)


def submission_root(folder: Path, shown: Path) -> Path:
    """Where the zarr group is in an unpacked submission: at its top, or in its one ``*.zarr``."""
    if (folder / ".zgroup").exists() or (folder / "zarr.json").exists():
        return folder
    nested = [p for p in folder.rglob("*.zarr") if p.is_dir()]
    if len(nested) == 1:
        return nested[0]
    raise UserError(
        f"{shown}: no zarr group at the top of the submission, nor one *.zarr folder in it"
    )


def _group(root: Path, shown: Path) -> zarr.Group:
    try:
        node = zarr.open(root, mode="r")
    except (OSError, ValueError) as exc:
        raise UserError(f"{shown}: not a zarr group ({exc})") from None
    if not isinstance(node, zarr.Group):
        raise UserError(f"{shown}: a zarr array, not a group of crops")
    return node


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def score_renderables(result: SubmissionScores) -> Iterator[Any]:
    """A table of each class's scores and pooled counts, then the overall scores."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"CellMap scores of {result.submission}", caption=Text(FOLLOWS))
    for column in ("class", "kind", "score", "f1", "hausdorff", "iou", "TP", "FP", "FN"):
        table.add_column(column, justify="left" if column in ("class", "kind") else "right")
    for name, s in sorted(result.scores["label_scores"].items()):
        instance = "combined_score" in s
        table.add_row(
            name,
            "instance" if instance else "semantic",
            f"{s['combined_score' if instance else 'iou']:.4f}",
            f"{s['f1']:.4f}" if instance else "",
            f"{s['normalized_hausdorff_distance']:.4f}" if instance else "",
            "" if instance else f"{s['iou']:.4f}",
            str(s["tp"]),
            str(s["fp"]),
            str(s["fn"]),
        )
    yield table
    yield Text(
        f"overall {result.scores['overall_score']:.4f}  (instance "
        f"{result.scores['overall_instance_score']:.4f}, semantic "
        f"{result.scores['overall_semantic_score']:.4f})"
    )
    if result.missing_crops:
        yield Text(
            f"missing crops (scored as empty): {', '.join(result.missing_crops)}", style="yellow"
        )
    if result.ignored:
        yield Text(f"not in the truth, ignored: {', '.join(result.ignored)}", style="yellow")


# --- one class, from single files ----------------------------------------------------------


def evaluate_one_class(
    pred: str | Path,
    truth: str | Path,
    *,
    head: str | None = None,
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
    overwrite: bool = False,
) -> EvaluationReport:
    """CellMap scores of one class (named after ``head``) for predictions and truths that are
    image files, through bioim2im's pairing and reports (see the module docstring)."""
    from bioim2im.evaluation import evaluate

    name = head or "object"

    def scoring(pairs: Sequence[ImagePair]) -> tuple[LabelScore, str]:
        from bioim2im.evaluation import most_labels

        most = most_labels(pairs)
        instances = most > 1
        if instances:
            note = f"class '{name}' scored as instances: a truth has {most} labels"
        else:
            note = f"class '{name}' scored as a semantic mask: one label at most"

        def score(prediction: np.ndarray, truth: np.ndarray, voxel_size: Any) -> dict[str, float]:
            return _one_class(prediction, truth, name, instances=instances, voxel_size=voxel_size)

        return score, note

    return evaluate(
        pred, truth, task="cellmap", head=head, json_path=json_path, csv_path=csv_path,
        overwrite=overwrite, scoring=scoring,
    )  # fmt: skip


def _one_class(
    prediction: np.ndarray,
    truth: np.ndarray,
    name: str,
    *,
    instances: bool,
    voxel_size: float | Sequence[float] | None,
) -> dict[str, float]:
    """CellMap scores of one class, without the always-zero ``overall_score`` of a single class."""
    from bioim2im_cellmap.metrics import cellmap_score

    scores = cellmap_score(
        {name: prediction},
        {name: truth},
        instance_classes={name} if instances else set(),
        voxel_size=1.0 if voxel_size is None else voxel_size,
    )
    overall = "overall_instance_score" if instances else "overall_semantic_score"
    return {k: v for k, v in scores.items() if k.startswith(f"{name}/") or k == overall}
