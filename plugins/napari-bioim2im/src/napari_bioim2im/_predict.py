"""The Predict widget: a model (run directory, checkpoint or bioimage.io package), an image
layer or a file, optional ``--set`` overrides; predicts in a thread worker with progress and
Cancel, and adds one layer per head, named after it (labels for label outputs).

An image layer is handed to ``bioim2im.api.predict`` as a lazy image, read block by block: the
values are those ``bioim2im predict`` writes for the same image. A file too large to load is
predicted block by block to disk with ``bioim2im.api.predict_files`` (default output folder
``<file>-predictions`` beside it), then opened lazily.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    RadioButtons,
    TextEdit,
)

from napari_bioim2im._common import (
    add_layers,
    chosen_path,
    find_runs,
    layer_picker,
    overrides_from,
)
from napari_bioim2im._layers import LayerImage, geometry, output_layers
from napari_bioim2im._work import (
    Cancelled,
    Job,
    Outcome,
    Relay,
    error_message,
    notify_error,
    notify_info,
)

_OPEN: weakref.WeakSet[PredictWidget] = weakref.WeakSet()
LAYER, FILE = "image layer", "image file"


class PredictWidget(Container):
    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.runs_folder = FileEdit(label="runs under", mode="d", value=Path.cwd() / "runs")
        self.runs = ComboBox(label="runs found", choices=self._found_runs, nullable=True)
        self.model = FileEdit(
            label="model",
            mode="r",
            tooltip="A run directory (type or paste it), a checkpoint (.pt), or a bioimage.io "
            "package (.zip, rdf.yaml); ONNX and TorchScript files too",
        )
        self.run_button = PushButton(text="Choose a run directory…")
        self.source = RadioButtons(
            label="predict", choices=[LAYER, FILE], value=LAYER, orientation="horizontal"
        )
        self.layer = layer_picker(napari_viewer, "image layer", ("image",))
        self.axes = LineEdit(
            label="axes", value="", tooltip="Letters of TCZYX, one per dimension; empty: guessed"
        )
        self.file = FileEdit(label="image file", mode="r")
        self.output = FileEdit(
            label="output folder", mode="d", tooltip="Default: <file>-predictions beside it"
        )
        self.overrides = TextEdit(
            label="--set", value="", tooltip="One override per line, e.g. predict.tta=true"
        )
        self.predict_button = PushButton(text="Predict")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="blocks", min=0, max=1, value=0)
        self.status = Label(value="")
        self.extend(
            [
                self.runs_folder,
                self.runs,
                self.model,
                self.run_button,
                self.source,
                self.layer,
                self.axes,
                self.file,
                self.output,
                self.overrides,
                self.predict_button,
                self.cancel_button,
                self.progress,
                self.status,
            ]
        )
        self.overrides.native.setMaximumHeight(90)
        self.job = Job()
        self.relay = Relay()
        self.relay.progress.connect(self._show_progress)
        self.runs_folder.changed.connect(self.refresh_runs)
        self.runs.changed.connect(self._pick_run)
        self.source.changed.connect(self._show_source)
        self.run_button.changed.connect(self._choose_run_dir)
        self.predict_button.changed.connect(self.predict)
        self.cancel_button.changed.connect(self.cancel)
        self.added: list[Any] = []
        """The layers the last prediction added."""
        self._show_source()
        self.refresh_runs()
        _OPEN.add(self)

    # --- choosing ------------------------------------------------------------------------
    def _found_runs(self, *_: Any) -> list[tuple[str, Path]]:
        folder = chosen_path(self.runs_folder.value)
        found = find_runs(folder) if folder is not None and folder.is_dir() else []
        return [(str(run), run) for run in found]

    def refresh_runs(self, *_: Any) -> None:
        self.runs.reset_choices()

    def _pick_run(self, run: Path | None) -> None:
        if run is not None:
            self.model.value = run

    def _choose_run_dir(self, *_: Any) -> None:
        from magicgui.widgets import show_file_dialog

        chosen = show_file_dialog(mode="d", caption="A bioim2im run directory")
        if chosen:
            self.model.value = Path(chosen)

    def offer(self, run_dir: Path) -> None:
        """Use ``run_dir`` (a run just trained) as the model."""
        folder = chosen_path(self.runs_folder.value)
        if folder is None or run_dir.parent.resolve() != folder.resolve():
            self.runs_folder.value = run_dir.parent
        self.refresh_runs()
        self.model.value = run_dir

    def _show_source(self, *_: Any) -> None:
        from_layer = self.source.value == LAYER
        self.layer.visible = self.axes.visible = from_layer
        self.file.visible = self.output.visible = not from_layer

    # --- running -------------------------------------------------------------------------
    def predict(self, *_: Any) -> Any:
        """Start predicting; returns the worker (None when something is missing: a
        notification says what)."""
        if self.job.running:
            return None
        try:
            work, done = self._plan()
        except Exception as exc:
            notify_error(error_message(exc))
            self.status.value = "failed"
            return None
        self.progress.value = 0
        self.status.value = "loading the model…"
        self.predict_button.enabled = False
        self.cancel_button.enabled = True
        return self.job.start(work, lambda outcome: self._finished(outcome, done))

    def cancel(self, *_: Any) -> None:
        if self.job.running:
            self.status.value = "cancelling…"
            self.job.stop()

    def _plan(self) -> tuple[Any, Any]:
        from bioim2im import api

        model = chosen_path(self.model.value)
        if model is None:
            raise api.UserError(
                "choose a model: a run directory, a checkpoint or a bioimage.io package"
            )
        overrides = overrides_from(self.overrides.value)
        if self.source.value == LAYER:
            layer = self.layer.value
            if layer is None:
                raise api.UserError("choose an image layer to predict (or predict an image file)")
            image = LayerImage(layer, self.axes.value)
            scale, translate = geometry(layer)

            def work(stop: threading.Event) -> dict[str, Any]:
                return api.predict(
                    model, image, overrides=overrides, on_progress=self._callback(stop)
                )

            def done(outputs: dict[str, Any]) -> list[Any]:
                return add_layers(
                    self.viewer,
                    output_layers(
                        outputs,
                        axes=image.axes,
                        shape=image.shape,
                        scale=scale,
                        translate=translate,
                    ),
                )

            return work, done
        file = chosen_path(self.file.value)
        if file is None:
            raise api.UserError("choose an image file to predict (or predict a layer)")
        output = chosen_path(self.output.value) or file.parent / f"{_stem(file)}-predictions"

        def work_files(stop: threading.Event) -> list[Path]:
            summary = api.predict_files(
                model,
                file,
                output,
                overrides=overrides,
                progress=False,
                on_progress=self._callback(stop),
            )
            return summary.results[0].outputs

        def done_files(outputs: list[Path]) -> list[Any]:
            from napari_bioim2im._reader import read_path, zarr_layers

            layers = []
            for path in outputs:
                if path.name.lower().endswith(".zarr"):  # <stem>.ome.zarr/<head>
                    layers += zarr_layers(path, prefix="")
                else:  # <stem>_<head>.tif
                    layers += read_path(path, name=_stem(path)[len(_stem(file)) + 1 :])
            return add_layers(self.viewer, layers)

        return work_files, done_files

    def _callback(self, stop: threading.Event) -> Any:
        if stop.is_set():
            raise Cancelled

        def on_progress(done: int, total: int) -> None:
            if stop.is_set():
                raise Cancelled
            self.relay.progress.emit(done, total)

        return on_progress

    def _show_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.status.value = f"{done}/{total} blocks"

    def _finished(self, outcome: Outcome, done: Any) -> None:
        self.predict_button.enabled = True
        self.cancel_button.enabled = False
        if outcome.status == "ok":
            try:
                self.added = done(outcome.value)
            except Exception as exc:
                notify_error(error_message(exc))
                self.status.value = "failed"
                return
            self.status.value = f"done: {', '.join(layer.name for layer in self.added)}"
        elif outcome.status == "cancelled":
            self.status.value = "cancelled"
            notify_info("prediction cancelled")
        else:
            self.status.value = "failed"


def _stem(path: Path) -> str:
    from napari_bioim2im._reader import _stem as stem

    return stem(path)


def open_predict_widgets(viewer: Any) -> list[PredictWidget]:
    return [widget for widget in _OPEN if widget.viewer is viewer]
