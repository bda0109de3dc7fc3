"""The Evaluate widget scores a labels layer against another as ``bioim2im evaluate`` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from napari_bioim2im._evaluate import EvaluateWidget
from napari_helpers import errors, nuclei, wait_for


@pytest.fixture
def widget(make_napari_viewer) -> EvaluateWidget:
    viewer = make_napari_viewer()
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


def test_scores_are_those_of_bioim2im_evaluate(
    widget: EvaluateWidget, qtbot, tmp_path: Path
) -> None:
    from bioim2im import api

    _, truth = nuclei((64, 64), seed=5)
    prediction = truth.copy()
    prediction[prediction == 2] = 0  # one object missed
    prediction[prediction == 3] = 0
    prediction[40:44, 2:6] = 9  # one found where there is none
    widget.viewer.add_labels(prediction, name="predicted")
    widget.viewer.add_labels(truth, name="truth")
    widget.prediction.value = widget.viewer.layers["predicted"]
    widget.truth.value = widget.viewer.layers["truth"]
    widget.score()
    wait_for(qtbot, widget)

    tifffile.imwrite(tmp_path / "p.tif", prediction)
    tifffile.imwrite(tmp_path / "t.tif", truth)
    report = api.evaluate(tmp_path / "p.tif", tmp_path / "t.tif", task="instance")
    assert widget.scores["AP@0.5"] == pytest.approx(report.aggregate["ap@0.50"])
    assert widget.scores["F1@0.5"] == pytest.approx(report.aggregate["f1@0.50"])
    both = np.count_nonzero((prediction > 0) & (truth > 0))
    dice = 2 * both / (np.count_nonzero(prediction) + np.count_nonzero(truth))
    assert widget.scores["Dice (foreground)"] == pytest.approx(dice)
    assert 0 < widget.scores["AP@0.5"] < 1
    table = widget.table.to_dict("list")
    assert table["metric"][0] == "AP@0.5" and float(table["value"][0]) == pytest.approx(
        widget.scores["AP@0.5"], abs=1e-4
    )


def test_layers_of_other_shapes_are_one_notification(
    widget: EvaluateWidget, qtbot, notifications
) -> None:
    widget.viewer.add_labels(np.zeros((32, 32), np.uint8), name="small")
    widget.viewer.add_labels(np.zeros((64, 64), np.uint8), name="large")
    widget.prediction.value = widget.viewer.layers["small"]
    widget.truth.value = widget.viewer.layers["large"]
    widget.score()
    wait_for(qtbot, widget)
    assert errors(notifications) == ["layers 'small' (32, 32) and 'large' (64, 64) differ in shape"]
    assert widget.status.value == "failed"
