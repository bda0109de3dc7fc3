"""``bioim2im cellmap evaluate`` (``evaluate --task cellmap``) over a whole submission, as the challenge scores it.

The truth is a folder (or zarr group) of crops, ``<truth>/crop<N>/<class>``: one array per class
(attributes ``voxel_size`` and ``translation`` in nm; they play the part of the challenge's
test-crop manifest). The submission is the zip ``bioim2im cellmap pack`` writes, or a zarr
folder of the same layout, read as the challenge reads it: a zip with the group at its top or
holding one ``*.zarr`` folder (``zip -r submission.zip submission.zarr``), a folder holding one
zip, folders without ``.zgroup``, crops named by their number. Each submitted array is brought
onto its truth crop's grid, counted per crop (:mod:`bioim2im_cellmap.metrics`), and the counts
are pooled per class; a class or crop the submission lacks is scored as missing. The JSON holds
the overall scores, each class's scores and pooled counts, and every crop's counts.

``alignment="challenge"`` (the default) gives the leaderboard's number: it follows the
challenge's evaluator at 6b9ad68 in every respect it can be told apart by:

- the classes of a crop are the truth crop's arrays, ``<class>_mask`` arrays included (scored
  as semantic classes of their own, so a truth holding one lowers the semantic score unless the
  mask is submitted too); a ``<class>_mask`` array multiplies both sides of ``<class>`` by its
  values before counting;
- a submitted class must be a Zarr-2 array: an OME-NGFF multiscale group (or a Zarr-3 array)
  is not read and the class scores as missing (``unread`` lists them);
- each array is placed by :func:`bioim2im_cellmap.grids.align_like_the_challenge`
  (scikit-image ``rescale`` with its anti-aliasing, whole-voxel placement with the challenge's
  rounding, centre pad/crop without metadata). Not reproduced: the challenge rescales arrays of
  more than 131,072,000 voxels chunk by chunk (seams every 297 voxels); here they are rescaled
  whole.

``alignment="physical"`` places each array where its voxels physically are
(:func:`bioim2im_cellmap.grids.resample`: sub-voxel exact, from the nearest pyramid level of a
multiscale group; ``<class>_mask`` arrays are masks only, ``> 0``). It is better science but
**not the leaderboard's number**.

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

FOLLOWS = "CellMap challenge evaluation at 6b9ad68 (code of 2026-06-30)"
MASK_SUFFIX = "_mask"
ALIGNMENTS = ("challenge", "physical")
"""How submitted arrays are placed: as the challenge's evaluator does (the leaderboard's
number), or physically exactly (see the module docstring)."""


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
    unread: list[str] = field(default_factory=list)
    """Submitted classes the challenge does not read (scored as missing), and why."""
    alignment: str = "challenge"

    def to_json(self) -> dict[str, Any]:
        return _finite(
            {
                "task": "cellmap",
                "follows": FOLLOWS,
                "submission": self.submission,
                "truth": self.truth,
                "alignment": self.alignment,
                **{
                    k: self.scores[k]
                    for k in ("overall_score", "overall_instance_score", "overall_semantic_score")
                },
                "label_scores": self.scores["label_scores"],
                "crops": self.crops,
                "missing_crops": self.missing_crops,
                "ignored": self.ignored,
                "unread": self.unread,
            }
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from score_renderables(self)


def is_truth_store(path: str | Path) -> bool:
    """Whether ``path`` looks like the challenge's truth: a folder or zarr group holding crop
    folders (the challenge needs no ``.zgroup`` in it)."""
    try:
        entries = _entries(str(path))
    except UserError:
        return False
    return any(name.startswith("crop") and kind == "group" for name, kind in entries.items())


def evaluate_submission(
    submission: str | Path,
    truth: str | Path,
    *,
    instance_classes: Collection[str] = INSTANCE_CLASSES,
    alignment: str = "challenge",
    json_path: str | Path | None = None,
    overwrite: bool = False,
) -> SubmissionScores:
    """Score ``submission`` (zip or zarr folder) against ``truth`` (see the module docstring);
    an existing ``json_path`` is replaced only with ``overwrite``, never an input."""
    if alignment not in ALIGNMENTS:
        raise UserError(f"--alignment {alignment!r}: expected one of {', '.join(ALIGNMENTS)}")
    if json_path is not None:
        from bioim2im.io.atomic import check_output_file

        check_output_file(
            Path(json_path), "--json", overwrite=overwrite, inputs=[submission, truth]
        )
    official = alignment == "challenge"
    truth_root = str(truth)
    truth_crops = sorted(n for n, kind in _entries(truth_root).items() if kind == "group")
    if not truth_crops:
        raise UserError(f"{truth}: holds no crop groups (crop<N>/<class> arrays)")
    with _opened(Path(submission)) as root:
        folders = [name for name, kind in _entries(str(root)).items() if kind == "group"]
        submitted = {name: name for name in folders}
        if not any(crop in submitted for crop in truth_crops):
            # Crops named by their number only, as the challenge reads them when no folder's
            # name is a truth crop's.
            submitted = {_crop_name(name): name for name in folders}
        if not any(crop in submitted for crop in truth_crops):
            raise UserError(
                f"{submission}: none of its crops ({', '.join(sorted(submitted)) or 'none'}) "
                f"is a crop of the truth {truth} ({', '.join(truth_crops)})"
            )
        counts: dict[str, list[dict[str, Any]]] = {}
        crops: dict[str, dict[str, dict[str, Any]]] = {}
        ignored = sorted(name for crop, name in submitted.items() if crop not in truth_crops)
        unread: list[str] = []
        for crop in truth_crops:
            source = submitted.get(crop)
            truth_entries = _entries(remote.join(truth_root, crop))
            truth_labels = _labels(truth_entries, official=official, truth=True)
            predicted: dict[str, str] = {}
            if source is not None:
                predicted = _entries(str(root / source))
                for name, kind in sorted(predicted.items()):
                    if name not in truth_labels:
                        ignored.append(f"{source}/{name}")
                    elif official and kind != "array":
                        unread.append(f"{source}/{name}: {_UNREAD[kind]}: scored as missing")
            readable = _labels(predicted, official=official, truth=False)
            crops[crop] = {}
            for name in truth_labels:
                truth_location = remote.join(truth_root, crop, name)
                pred_location = str(root / source / name) if source and name in readable else None
                mask = name + MASK_SUFFIX
                mask_location = (
                    remote.join(truth_root, crop, mask)
                    if truth_entries.get(mask) in ("array", "array3")
                    else None
                )
                counted = _score(
                    truth_location,
                    pred_location,
                    mask_location,
                    name,
                    name in instance_classes,
                    official,
                )
                crops[crop][name] = counted
                counts.setdefault(name, []).append(counted)
    result = SubmissionScores(
        str(submission),
        str(truth),
        combine(counts, instance_classes),
        crops,
        missing_crops=[c for c in truth_crops if c not in submitted],
        ignored=ignored,
        unread=unread,
        alignment=alignment,
    )
    if json_path is not None:
        from bioim2im.io.atomic import atomic_file

        text = json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n"
        with atomic_file(Path(json_path)) as partial:
            partial.write_text(text, encoding="utf-8")
    return result


_UNREAD = {
    "group": "a group (e.g. an OME-NGFF multiscale), not an array; the challenge reads only "
    "Zarr-2 arrays",
    "array3": "a Zarr-3 array; the challenge reads only Zarr-2 arrays",
}


def _crop_name(name: str) -> str:
    return name if name.startswith("crop") else f"crop{name}"


def _entries(location: str) -> dict[str, str]:
    """The folders in ``location`` by kind: ``array`` (Zarr 2), ``array3`` (Zarr 3) or
    ``group`` (a zarr group, or a plain folder: the challenge needs no ``.zgroup``)."""
    if remote.is_remote(location):
        node = remote.open_node(location)
        if not isinstance(node, zarr.Group):
            raise UserError(f"{location}: a zarr array, not a group")
        return {
            **{name: "group" for name, _ in node.groups()},
            **{name: "array" for name in node.array_keys()},
        }
    folder = Path(location)
    if not folder.is_dir():
        raise UserError(f"{location}: not a folder")
    found: dict[str, str] = {}
    for child in sorted(folder.iterdir()):
        if not child.is_dir():
            continue
        if (child / ".zarray").is_file():
            found[child.name] = "array"
        elif (child / "zarr.json").is_file():
            found[child.name] = _zarr3_kind(child / "zarr.json")
        else:
            found[child.name] = "group"
    return found


def _zarr3_kind(metadata: Path) -> str:
    try:
        with metadata.open("rb") as stream:
            node = json.loads(stream.read(1 << 20))
    except (OSError, ValueError):
        return "group"
    return "array3" if isinstance(node, dict) and node.get("node_type") == "array" else "group"


def _labels(entries: dict[str, str], *, official: bool, truth: bool) -> list[str]:
    """The classes of a crop: with the challenge's alignment, its Zarr-2 arrays (a truth's
    Zarr-3 arrays too), ``<class>_mask`` included; physically, its arrays and groups less the
    masks."""
    if official:
        kinds = ("array", "array3") if truth else ("array",)
        return sorted(n for n, kind in entries.items() if kind in kinds)
    return sorted(n for n in entries if not n.endswith(MASK_SUFFIX))


def _score(
    truth_location: str,
    pred_location: str | None,
    mask_location: str | None,
    name: str,
    instance: bool,
    official: bool,
) -> dict[str, Any]:
    """One class of one crop: the prediction placed on the truth's grid as the challenge places
    it (``official``) or physically, masked, then counted."""
    level = open_levels(truth_location)[0]
    grid = Grid.of(level)
    truth = level.read()
    base = {"voxel_size": list(grid.voxel_size), "num_voxels": int(truth.size)}
    if pred_location is None:
        return {**missing_counts(truth, instance), **base, "is_missing": True}
    if official:
        pred = _placed_officially(pred_location, grid, name)
    else:
        pred = resample(open_labels(pred_location, grid), grid, instance=instance)
    if mask_location is not None:
        if official:
            mask = _read(remote.open_array(mask_location), mask_location)
            if mask.shape != truth.shape:
                raise UserError(
                    f"{mask_location}: shape {list(mask.shape)}, its class's is {list(truth.shape)}"
                )
            # The challenge multiplies both sides by the mask's values, as they are.
        else:
            # Uncertain regions of low-resolution annotations count for neither side.
            mask = np.asarray(remote.open_array(mask_location)[...]) > 0
        truth, pred = truth * mask, pred * mask
    counted = (
        instance_counts(pred, truth, grid.voxel_size) if instance else semantic_counts(pred, truth)
    )
    return {**counted, **base, "is_missing": False}


def _placed_officially(pred_location: str, grid: Grid, name: str) -> np.ndarray:
    """The submitted array on the truth's grid as the challenge's evaluator places it."""
    from bioim2im_cellmap.grids import align_like_the_challenge, recorded

    array = remote.open_array(pred_location)
    ndim = len(grid.shape)
    try:
        voxel_size = recorded(array.attrs.asdict(), ("voxel_size", "resolution", "scale"), ndim)
        translation = recorded(array.attrs.asdict(), ("translation", "offset"), ndim)
        # The challenge chooses nearest or linear resampling by its own list of instance
        # classes, whichever classes it is told to score as instances.
        values = _read(array, pred_location)
        return align_like_the_challenge(
            values, voxel_size, translation, grid, nearest=name in INSTANCE_CLASSES
        )
    except UserError as exc:
        raise UserError(f"{pred_location}: {str(exc).removeprefix(pred_location + ': ')}") from None


def _read(array: zarr.Array, location: str) -> np.ndarray:
    try:
        return np.asarray(array[...])
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        if remote.is_unreachable(exc):
            raise UserError(remote.unreachable(location, exc)) from None
        raise UserError(f"{location}: unreadable data ({type(exc).__name__}: {exc})") from None


@contextmanager
def _opened(path: Path) -> Iterator[Path]:
    """The submission's zarr folder, found as the challenge finds it: a zip (or a folder
    holding exactly one zip) is unpacked to a temporary folder first; then the folder itself,
    or the one ``*.zarr`` folder inside it."""
    if not path.exists():
        raise UserError(f"submission {path} does not exist")
    archive = path if path.is_file() else _single_zip(path)
    if archive is None:
        yield submission_root(path, path)
        return
    if not zipfile.is_zipfile(archive):
        raise UserError(f"{archive}: neither a zip file nor a zarr folder")
    with tempfile.TemporaryDirectory(prefix="bioim2im-submission-") as folder:
        try:
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(folder)
        except (OSError, zipfile.BadZipFile) as exc:
            raise UserError(f"{archive}: cannot unpack the zip ({exc})") from None
        yield submission_root(Path(folder), archive)


def _single_zip(folder: Path) -> Path | None:
    """The one zip at the top of ``folder`` (the challenge unpacks it and ignores the rest)."""
    zips = sorted(p for p in folder.iterdir() if p.is_file() and zipfile.is_zipfile(p))
    if len(zips) > 1:
        raise UserError(
            f"{folder}: holds {len(zips)} zip files ({', '.join(p.name for p in zips)}); "
            "a submission folder may hold one"
        )
    return zips[0] if zips else None


def submission_root(folder: Path, shown: Path) -> Path:
    """Where the zarr group is in a submission: at its top, else in its one ``*.zarr`` folder,
    else the folder itself (the challenge needs no ``.zgroup``)."""
    if (folder / ".zgroup").exists() or (folder / "zarr.json").exists():
        return folder
    nested = [p for p in folder.rglob("*.zarr") if p.is_dir()]
    if len(nested) == 1:
        return nested[0]
    if nested:
        names = ", ".join(sorted(p.relative_to(folder).as_posix() for p in nested))
        raise UserError(f"{shown}: holds several *.zarr folders ({names}); expected one")
    return folder


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
    for line in result.unread:
        yield Text(f"not read: {line}", style="yellow")
    if result.alignment != "challenge":
        yield Text(
            f"alignment {result.alignment}: not the leaderboard's number "
            "(--alignment challenge gives it)",
            style="yellow",
        )


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
