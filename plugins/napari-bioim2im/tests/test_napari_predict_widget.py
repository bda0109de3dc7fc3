"""The Predict widget: a tiny run's prediction of a layer or a file adds the heads' layers with
the values ``bioim2im predict`` writes; Cancel stops the worker; mistakes are one notification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from napari_bioim2im._predict import FILE, PredictWidget
from napari_helpers import errors, wait_for


def cli_predict(run: Path, image: Path, output: Path, *options: str) -> None:
    """``bioim2im predict RUN --input IMAGE --output OUTPUT``, as a user types it."""
    from typer.testing import CliRunner

    from bioim2im.cli import app

    result = CliRunner().invoke(
        app, ["predict", str(run), "--input", str(image), "--output", str(output), *options]
    )
    assert result.exit_code == 0, result.output


@pytest.fixture
def widget(make_napari_viewer, tmp_path: Path) -> PredictWidget:
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    widget.runs_folder.value = tmp_path
    viewer.window.add_dock_widget(widget)
    return widget


def test_a_layer_is_predicted_as_bioim2im_predict_predicts_its_file(
    widget: PredictWidget, qtbot, instance_run: Path, image_file: Path, tmp_path: Path
) -> None:
    image = tifffile.imread(image_file)
    layer = widget.viewer.add_image(image, name="cells", scale=(0.5, 2.0), translate=(10, -4))
    widget.model.value = instance_run
    widget.layer.value = layer
    widget.predict()
    wait_for(qtbot, widget)

    seg = widget.viewer.layers["seg"]
    assert type(seg).__name__ == "Labels"
    assert [layer.name for layer in widget.added] == ["seg"]
    np.testing.assert_allclose(seg.scale, (0.5, 2.0))
    np.testing.assert_allclose(seg.translate, (10, -4))
    cli_predict(instance_run, image_file, tmp_path / "cli", "--format", "tiff")
    expected = tifffile.imread(tmp_path / "cli" / "cells_seg.tif")
    np.testing.assert_array_equal(np.asarray(seg.data), expected.reshape(image.shape))
    assert seg.data.max() > 0, "the tiny model finds no object: the comparison says little"
    assert widget.progress.value == widget.progress.max


def test_a_file_is_predicted_to_disk_and_opened_lazily(
    widget: PredictWidget, qtbot, instance_run: Path, image_file: Path, tmp_path: Path
) -> None:
    widget.model.value = instance_run
    widget.source.value = FILE
    widget.file.value = image_file
    widget.output.value = tmp_path / "out"
    widget.overrides.value = "--set predict.block_size=[32, 32]\n"
    widget.predict()
    wait_for(qtbot, widget)

    seg = widget.viewer.layers["seg"]
    assert type(seg).__name__ == "Labels"
    assert type(seg.data).__module__.startswith("dask"), "opened lazily"
    cli_predict(instance_run, image_file, tmp_path / "cli", "--set", "predict.block_size=[32, 32]")
    import zarr

    labels = tmp_path / "cli" / "cells.ome.zarr" / "labels" / "seg" / "0"  # instance labels
    expected = np.asarray(zarr.open_array(str(labels)))
    np.testing.assert_array_equal(np.asarray(seg.data), expected[0])
    assert (widget.progress.value, widget.progress.max) == (12, 12)


def test_cancel_stops_the_worker(
    widget: PredictWidget,
    qtbot,
    instance_run: Path,
    image_file: Path,
    tmp_path: Path,
    notifications,
) -> None:
    widget.model.value = instance_run
    widget.source.value = FILE
    widget.file.value = image_file
    widget.output.value = tmp_path / "out"
    widget.overrides.value = "predict.block_size=[32, 32]"
    worker = widget.predict()
    assert worker is not None and widget.cancel_button.enabled
    widget.cancel()
    wait_for(qtbot, widget)

    assert widget.status.value == "cancelled"
    assert not widget.added and len(widget.viewer.layers) == 0
    assert not (tmp_path / "out" / "cells.ome.zarr").exists(), "nothing published"
    assert widget.predict_button.enabled and not widget.cancel_button.enabled
    assert not errors(notifications)
    assert any("cancelled" in n.message for n in notifications)


@pytest.mark.parametrize(
    ("setting", "named"),
    [("predict.tta=sometimes", "predict.tta"), ("predict.no_such_key=1", "no_such_key")],
)
def test_a_bad_value_is_one_notification(
    widget: PredictWidget, qtbot, instance_run: Path, notifications, setting: str, named: str
) -> None:
    widget.viewer.add_image(np.zeros((64, 64), np.float32), name="cells")
    widget.model.value = instance_run
    widget.overrides.value = setting
    widget.predict()
    wait_for(qtbot, widget)

    shown = errors(notifications)
    assert len(shown) == 1, shown
    assert named in shown[0] and "Traceback" not in shown[0]
    assert widget.status.value == "failed" and len(widget.viewer.layers) == 1


def test_a_missing_model_is_one_notification_with_bioim2im_message(
    widget: PredictWidget, qtbot, tmp_path: Path, notifications
) -> None:
    from bioim2im import api

    widget.viewer.add_image(np.zeros((64, 64), np.float32), name="cells")
    missing = tmp_path / "no-such-run"
    widget.model.value = missing
    widget.predict()
    wait_for(qtbot, widget)

    with pytest.raises(api.UserError) as raised:
        api.predict(missing, np.zeros((64, 64), np.float32))
    assert errors(notifications) == [str(raised.value)]


def test_nothing_chosen_is_one_notification(widget: PredictWidget, notifications) -> None:
    assert widget.predict() is None
    assert errors(notifications) == [
        "choose a model: a run directory, a checkpoint or a bioimage.io package"
    ]


def test_runs_under_a_folder_can_be_picked(widget: PredictWidget, instance_run: Path) -> None:
    widget.runs_folder.value = instance_run.parent
    assert instance_run in widget.runs.choices
    widget.runs.value = instance_run
    assert Path(widget.model.value) == instance_run
