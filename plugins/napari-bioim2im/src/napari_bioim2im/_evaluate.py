"""The Evaluate widget: a labels layer scored against another, with ``bioim2im.api.evaluate``:
object detection at IoU 0.5 (AP, F1, precision, recall, the matched objects' mean IoU, as
``bioim2im evaluate --task instance``) and the foreground's Dice and IoU (every non-zero label
counts as foreground), in a table."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import Container, Label, PushButton, Table

from napari_bioim2im._common import layer_picker
from napari_bioim2im._layers import level0
from napari_bioim2im._work import Job, Outcome, error_message, notify_error

ROWS = (
    ("AP@0.5", "instance", "ap@0.50"),
    ("F1@0.5", "instance", "f1@0.50"),
    ("precision@0.5", "instance", "precision@0.50"),
    ("recall@0.5", "instance", "recall@0.50"),
    ("mean matched IoU@0.5", "instance", "mean_matched_iou@0.50"),
    ("Dice (foreground)", "semantic", "dice"),
    ("IoU (foreground)", "semantic", "iou"),
)


class EvaluateWidget(Container):
    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.prediction = layer_picker(napari_viewer, "prediction", ("labels",))
        self.truth = layer_picker(napari_viewer, "ground truth", ("labels",))
        self.score_button = PushButton(text="Score")
        self.table = Table(value={"metric": [], "value": []})
        self.status = Label(value="")
        self.extend([self.prediction, self.truth, self.score_button, self.table, self.status])
        self.job = Job()
        self.score_button.changed.connect(self.score)
        self.scores: dict[str, float] = {}

    def score(self, *_: Any) -> Any:
        if self.job.running:
            return None
        from bioim2im import api

        prediction, truth = self.prediction.value, self.truth.value
        try:
            if prediction is None or truth is None:
                raise api.UserError("choose a prediction and a ground truth labels layer")
            pred = np.asarray(level0(prediction))
            true = np.asarray(level0(truth))
        except Exception as exc:
            notify_error(error_message(exc))
            return None
        names = (prediction.name, truth.name)
        self.status.value = "scoring…"
        self.score_button.enabled = False
        return self.job.start(lambda stop: _scores(pred, true, names), self._finished)

    def _finished(self, outcome: Outcome) -> None:
        self.score_button.enabled = True
        if outcome.status != "ok":
            self.status.value = "failed"
            return
        self.scores = outcome.value
        self.table.value = {
            "metric": [label for label, _, _ in ROWS],
            "value": [f"{self.scores[label]:.4f}" for label, _, _ in ROWS],
        }
        self.status.value = ""


def _scores(pred: np.ndarray, truth: np.ndarray, names: tuple[str, str]) -> dict[str, float]:
    """Each row's value, through ``bioim2im.api.evaluate`` on temporary TIFF files."""
    from bioim2im import api
    from bioim2im.io import write_image

    if pred.shape != truth.shape:
        raise api.UserError(
            f"layers '{names[0]}' {pred.shape} and '{names[1]}' {truth.shape} differ in shape"
        )
    axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(pred.ndim)
    if axes is None:
        raise api.UserError(f"layer '{names[0]}' has {pred.ndim} dimensions; score 2D or 3D labels")
    found: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bioim2im-evaluate-") as folder:
        root = Path(folder)
        pairs = {
            "instance": (_labels(pred), _labels(truth)),
            "semantic": ((pred > 0).astype(np.uint8), (truth > 0).astype(np.uint8)),
        }
        for task, (p, t) in pairs.items():
            p_path = write_image(root / task / "prediction.tif", p, axes=axes)
            t_path = write_image(root / task / "truth.tif", t, axes=axes)
            classes = [1] if task == "semantic" else None
            report = api.evaluate(p_path, t_path, task=task, classes=classes)
            found[task] = report.aggregate
    return {label: float(found[task][key]) for label, task, key in ROWS}


def _labels(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        return np.where(array < 0, 0, array)
    return array
