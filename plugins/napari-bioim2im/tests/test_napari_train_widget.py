"""The Train widget: a few steps from layers write a run that the Predict widget is offered;
Stop ends training with a checkpoint; a bad value is one notification and leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from napari_bioim2im._predict import PredictWidget
from napari_bioim2im._train import FOLDER, TrainWidget
from napari_helpers import TINY_OVERRIDES, errors, nuclei, wait_for


@pytest.fixture
def widget(make_napari_viewer, tmp_path: Path) -> TrainWidget:
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.runs_folder.value = tmp_path / "runs"
    widget.overrides.value = "\n".join(TINY_OVERRIDES)
    return widget


def add_pair(widget: TrainWidget) -> None:
    image, labels = nuclei((64, 64), seed=3)
    widget.viewer.add_image(image, name="cells")
    widget.viewer.add_labels(labels, name="nuclei")
    widget.image.value = widget.viewer.layers["cells"]
    widget.target.value = widget.viewer.layers["nuclei"]


def test_training_from_layers_writes_a_run_offered_to_predict(
    widget: TrainWidget, qtbot, tmp_path: Path, notifications
) -> None:
    add_pair(widget)
    predict = PredictWidget(widget.viewer)
    widget.viewer.window.add_dock_widget(predict)
    assert "instance-2d" in widget.preset.choices
    widget.preset.value = "instance-2d"
    widget.steps.value = 4
    widget.train()
    wait_for(qtbot, widget)

    assert not errors(notifications)
    result = widget.result
    assert (result.step, result.total_steps, result.stop_reason) == (4, 4, None)
    run = Path(result.run_dir)
    assert run.parent == tmp_path / "runs" and run.name.startswith("instance-2d-")
    assert (run / "checkpoints" / "best.pt").is_file()
    layers = run.with_name(f"{run.name}-layers")
    assert sorted(p.relative_to(layers).as_posix() for p in layers.rglob("*.tif")) == [
        "GT/cells.tif",
        "IM/cells.tif",
    ]
    assert not (run / "layers").exists()
    assert [step for step, _ in widget.loss_plot.train] == [1, 2, 3, 4]
    assert widget.progress.value == 4
    assert Path(predict.model.value) == run
    assert widget.predict_button.enabled


def test_stop_ends_training_with_a_checkpoint(widget: TrainWidget, qtbot) -> None:
    add_pair(widget)
    widget.preset.value = "instance-2d"
    widget.steps.value = 100_000
    widget.relay.metrics.connect(lambda record: widget.stop())
    widget.train()
    assert widget.stop_button.enabled
    wait_for(qtbot, widget)

    result = widget.result
    assert result.stop_reason == "stop requested" and 1 <= result.step < 100
    assert (Path(result.run_dir) / "checkpoints" / "last.pt").is_file()
    assert widget.status.value.startswith("stopped (stop requested)")


def test_training_from_a_data_folder(widget: TrainWidget, qtbot, data: Path) -> None:
    widget.preset.value = "segmentation-2d"
    widget.source.value = FOLDER
    widget.data.value = data
    widget.steps.value = 2
    widget.train()
    wait_for(qtbot, widget)
    assert widget.result is not None and widget.result.step == 2
    assert (Path(widget.result.run_dir) / "split.json").is_file()


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("train.optimizer.lr=fast", "train.optimizer.lr"),
        ("data.val_path=no-such-folder", "no-such-folder"),
    ],
)
def test_a_bad_value_is_one_notification_and_leaves_no_run(
    widget: TrainWidget, qtbot, tmp_path: Path, notifications, setting: str, named: str
) -> None:
    add_pair(widget)
    widget.preset.value = "instance-2d"
    widget.steps.value = 2
    widget.overrides.value += f"\n{setting}"
    widget.train()
    wait_for(qtbot, widget)

    shown = errors(notifications)
    assert len(shown) == 1 and named in shown[0], shown
    assert widget.result is None and widget.status.value == "failed"
    assert not any((tmp_path / "runs").glob("*/checkpoints")), "no run left behind"
    assert not any((tmp_path / "runs").glob("*-layers"))
