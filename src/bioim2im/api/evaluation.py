"""Evaluation: predictions against ground truth (:func:`evaluate`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

from bioim2im.api.options import Opt, PythonOnly

if TYPE_CHECKING:
    from bioim2im.evaluation import EvaluationReport

PathLike = str | os.PathLike[str]


def evaluate(
    pred: Annotated[PathLike, Opt("Prediction file, folder or zarr group.", ("--pred", "-p"))],
    truth: Annotated[PathLike, Opt("Ground-truth file or folder.", ("--truth", "-t"))],
    *,
    task: Annotated[
        str,
        Opt(
            "semantic, instance, regression, auto (from the data), or a task a plugin adds "
            "(bioim2im list-plugins --kind evaluation)."
        ),
    ] = "auto",
    head: Annotated[
        str | None, Opt("Which head's predictions to score when there are several.")
    ] = None,
    classes: Annotated[Sequence[int] | None, PythonOnly()] = None,
    voxel_size: Annotated[float | Sequence[float] | None, PythonOnly()] = None,
    json_path: Annotated[
        PathLike | None, Opt("Write per-image and aggregate metrics as JSON.", ("--json",))
    ] = None,
    csv_path: Annotated[
        PathLike | None,
        Opt("Write one row per image plus an aggregate row as CSV.", ("--csv",)),
    ] = None,
    overwrite: Annotated[bool, Opt("Replace existing --json/--csv files.")] = False,
) -> EvaluationReport | Any:
    """Score predictions against ground truth; a table per image and overall.

    Image by image (see :mod:`bioim2im.evaluation` for pairing and the automatic choice of
    ``task``), optionally writing JSON and CSV (an existing report file is replaced only with
    ``overwrite``, and never ``pred`` or ``truth``). ``classes`` (the semantic classes to
    score) and ``voxel_size`` (for distances) are Python-only. A task a plugin registers
    (kind ``evaluation``) runs that plugin's scoring and returns its report."""
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    if ("evaluation", task) in registry:
        scoring = registry.get("evaluation", task).load()
        return scoring(
            pred, truth, head=head, json_path=json_path, csv_path=csv_path, overwrite=overwrite
        )
    from bioim2im.evaluation import evaluate as run

    return run(
        pred, truth, task=task, head=head, classes=classes, voxel_size=voxel_size,
        json_path=json_path, csv_path=csv_path, overwrite=overwrite,
    )  # fmt: skip
