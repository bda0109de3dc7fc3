"""The Train widget: a preset by name (or file), an image layer and its target layer (or a data
folder), steps or minutes; trains in a thread worker with a live loss curve. Stop ends
training after the current step with a checkpoint (the run can be resumed with ``bioim2im
train --resume``); the run is then offered to the Predict widget.

Layers are written as one training pair into ``RUN_DIR-layers/`` beside the run (``IM/`` and the
folder of the target the preset's heads read), which the run's ``data.path`` names. Beside, not
inside: a run directory never holds what its training reads.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    RadioButtons,
    SpinBox,
    TextEdit,
)
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_bioim2im._common import chosen_path, layer_picker, overrides_from
from napari_bioim2im._layers import LayerImage, level0
from napari_bioim2im._work import Job, Outcome, Relay, error_message, notify_error, notify_info

LAYERS, FOLDER = "layers", "data folder"


class LossPlot(QWidget):
    """The training loss (blue) and validation loss (orange) against the step."""

    def __init__(self) -> None:
        super().__init__()
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def add(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        if isinstance(record.get("loss"), (int, float)) and np.isfinite(record["loss"]):
            self.train.append((step, float(record["loss"])))
        if isinstance(record.get("val/loss"), (int, float)) and np.isfinite(record["val/loss"]):
            self.val.append((step, float(record["val/loss"])))
        self.update()

    def clear(self) -> None:
        self.train, self.val = [], []
        self.update()

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        points = self.train + self.val
        margin = 8
        width, height = self.width() - 2 * margin, self.height() - 2 * margin
        painter.setPen(QColor(200, 200, 200))
        if not points:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss")
            painter.end()
            return
        steps = [p[0] for p in points]
        values = [p[1] for p in points]
        s0, s1 = min(steps), max(max(steps), min(steps) + 1)
        v0, v1 = min(values), max(values)
        v1 = v1 if v1 > v0 else v0 + 1

        def place(step: int, value: float) -> QPointF:
            x = margin + (step - s0) / (s1 - s0) * width
            y = margin + (1 - (value - v0) / (v1 - v0)) * height
            return QPointF(x, y)

        for series, color in ((self.train, QColor(80, 160, 255)), (self.val, QColor(255, 160, 60))):
            if series:
                painter.setPen(QPen(color, 2))
                painter.drawPolyline(QPolygonF([place(s, v) for s, v in series]))
        painter.setPen(QColor(200, 200, 200))
        painter.drawText(margin, margin + 10, f"loss {values[-1]:.4g}  (step {steps[-1]})")
        painter.end()


class TrainWidget(Container):
    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=True)
        from bioim2im import api

        self.viewer = napari_viewer
        rows = api.list_presets()
        self.preset = ComboBox(
            label="preset",
            choices=[(row["name"], row["name"]) for row in rows],
            value="segmentation-2d" if any(r["name"] == "segmentation-2d" for r in rows) else None,
            nullable=True,
            tooltip="\n".join(f"{r['name']}: {r['description']}" for r in rows),
        )
        self.preset_file = FileEdit(label="or preset file", mode="r", filter="*.toml")
        self.source = RadioButtons(
            label="train on", choices=[LAYERS, FOLDER], value=LAYERS, orientation="horizontal"
        )
        self.image = layer_picker(napari_viewer, "image layer", ("image",))
        self.target = layer_picker(
            napari_viewer,
            "target layer",
            ("labels", "image"),
            tooltip="Ground truth: labels "
            "for segmentation, an image for restoration or label-free prediction",
        )
        self.data = FileEdit(label="data folder", mode="d")
        self.steps = SpinBox(label="steps", min=1, max=10_000_000, value=2000)
        self.minutes = FloatSpinBox(
            label="minutes",
            min=0,
            max=100_000,
            value=0,
            tooltip="Stop after this long; 0: no limit",
        )
        self.runs_folder = FileEdit(label="runs folder", mode="d", value=Path.cwd() / "runs")
        self.overrides = TextEdit(
            label="--set", value="", tooltip="One override per line, e.g. data.patch_size=[64, 64]"
        )
        self.train_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop (saves a checkpoint)", enabled=False)
        self.progress = ProgressBar(label="steps", min=0, max=1, value=0)
        self.status = Label(value="")
        self.predict_button = PushButton(text="Predict with this run", enabled=False)
        self.extend(
            [
                self.preset,
                self.preset_file,
                self.source,
                self.image,
                self.target,
                self.data,
                self.steps,
                self.minutes,
                self.runs_folder,
                self.overrides,
                self.train_button,
                self.stop_button,
                self.progress,
            ]
        )
        self.loss_plot = LossPlot()
        self.native.layout().addWidget(self.loss_plot)
        self.extend([self.status, self.predict_button])
        self.overrides.native.setMaximumHeight(90)
        self.job = Job()
        self.relay = Relay()
        self.relay.metrics.connect(self._record)
        self.source.changed.connect(self._show_source)
        self.train_button.changed.connect(self.train)
        self.stop_button.changed.connect(self.stop)
        self.predict_button.changed.connect(self.offer_run)
        self.result: Any = None
        """The last finished run's TrainResult."""
        self._show_source()

    def _show_source(self, *_: Any) -> None:
        from_layers = self.source.value == LAYERS
        self.image.visible = self.target.visible = from_layers
        self.data.visible = not from_layers

    # --- running -------------------------------------------------------------------------
    def train(self, *_: Any) -> Any:
        """Start training; returns the worker (None when something is missing: a notification
        says what)."""
        if self.job.running:
            return None
        try:
            work = self._plan()
        except Exception as exc:
            notify_error(error_message(exc))
            self.status.value = "failed"
            return None
        self.loss_plot.clear()
        self.progress.max = max(int(self.steps.value), 1)
        self.progress.value = 0
        self.status.value = "starting…"
        self.train_button.enabled = False
        self.stop_button.enabled = True
        self.predict_button.enabled = False
        return self.job.start(work, self._finished)

    def stop(self, *_: Any) -> None:
        if self.job.running:
            self.status.value = "stopping after this step…"
            self.job.stop()

    def _plan(self) -> Any:
        from bioim2im import api

        preset: str | Path | None = chosen_path(self.preset_file.value) or self.preset.value
        if preset is None:
            raise api.UserError("choose a preset, by name or as a file")
        runs = chosen_path(self.runs_folder.value)
        if runs is None:
            raise api.UserError("choose a folder for the runs")
        user = overrides_from(self.overrides.value)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = runs / f"{Path(str(preset)).stem}-{stamp}"
        settings = [f"train.steps={int(self.steps.value)}"]
        if self.minutes.value > 0:
            settings.append(f"train.max_minutes={float(self.minutes.value)}")
        if self.source.value == FOLDER:
            folder = chosen_path(self.data.value)
            if folder is None:
                raise api.UserError("choose the data folder (IM/ and GT/, see bioim2im's README)")
            settings.append(f"data.path={folder}")
            pairs = None
        else:
            pairs = self._layer_pair(preset, user)
            # Layers are small and in memory: no data-loading processes beside the viewer.
            settings += [f"data.path={layers_folder(run_dir)}", "data.num_workers=0"]
        overrides = [*settings, *user]

        def work(stop: threading.Event) -> Any:
            if pairs is not None:
                _write_layers(layers_folder(run_dir), *pairs)
            try:
                return api.train(
                    preset,
                    overrides=overrides,
                    run_dir=run_dir,
                    on_metrics=self.relay.metrics.emit,
                    should_stop=stop.is_set,
                )
            except BaseException:
                _remove_unstarted(run_dir)
                raise

        return work

    def _layer_pair(self, preset: str | Path, user: list[str]) -> tuple[Any, ...]:
        from bioim2im import api

        image, target = self.image.value, self.target.value
        if image is None or target is None:
            raise api.UserError("choose an image layer and its target layer (or a data folder)")
        targets = {
            head.target or "GT"
            for head in api.load_preset(preset, overrides=user).model.heads.values()
        }
        if len(targets) != 1:
            raise api.UserError(
                f"preset {preset}: its heads read {len(targets)} targets "
                f"({', '.join(sorted(targets))}); train it from a data folder"
            )
        source = LayerImage(image)
        truth = np.asarray(level0(target))
        return source.read(), source.axes, truth, targets.pop(), image.name

    def _record(self, record: dict[str, Any]) -> None:
        self.loss_plot.add(record)
        step = int(record.get("step", 0))
        self.progress.value = min(step, self.progress.max)
        if "loss" in record:
            self.status.value = f"step {step}: loss {record['loss']:.4g}"

    def _finished(self, outcome: Outcome) -> None:
        self.train_button.enabled = True
        self.stop_button.enabled = False
        if outcome.status != "ok":
            self.status.value = "failed"
            return
        result = self.result = outcome.value
        how = f"stopped ({result.stop_reason})" if result.stop_reason else "finished"
        self.status.value = f"{how} at step {result.step}: {result.run_dir}"
        self.predict_button.enabled = True
        notify_info(f"training {how} at step {result.step}; the run is {result.run_dir}")
        self.offer_run()

    def offer_run(self, *_: Any) -> None:
        """Hand the last run to the viewer's Predict widget (opening one if none is open)."""
        from napari_bioim2im._predict import PredictWidget, open_predict_widgets

        if self.result is None:
            return
        widgets = open_predict_widgets(self.viewer)
        if not widgets:
            widget = PredictWidget(self.viewer)
            self.viewer.window.add_dock_widget(widget, name="Predict (bioim2im)")
            widgets = [widget]
        for widget in widgets:
            widget.offer(Path(self.result.run_dir))


def layers_folder(run_dir: Path) -> Path:
    """Where the layers a run trains from are written: beside the run, named after it."""
    return run_dir.with_name(f"{run_dir.name}-layers")


def _write_layers(
    folder: Path, image: np.ndarray, axes: str, truth: np.ndarray, target: str, name: str
) -> None:
    """One training pair: ``IM/<name>.tif`` and ``<target>/<name>.tif``."""
    from bioim2im.io import write_image

    spatial = "".join(a for a in axes if a in "ZYX")
    truth_axes = spatial if truth.ndim == len(spatial) else axes
    if truth.dtype == bool:
        truth = truth.astype(np.uint8)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "layer"
    write_image(folder / "IM" / f"{stem}.tif", image, axes=axes)
    write_image(folder / target / f"{stem}.tif", truth, axes=truth_axes)


def _remove_unstarted(run_dir: Path) -> None:
    """The layers written for a run that failed before it saved anything."""
    if any((run_dir / "checkpoints").glob("*.pt")):
        return
    shutil.rmtree(layers_folder(run_dir), ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()
