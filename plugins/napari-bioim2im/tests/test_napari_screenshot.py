"""The README's screenshot: a viewer with an image, the labels the Predict widget added and the
widget docked, rendered on the virtual screen.

``NAPARI_BIOIM2IM_SCREENSHOT=1 pytest plugins/napari-bioim2im/tests/test_napari_screenshot.py``
writes it to ``docs/screenshot.png``; otherwise the test renders it to a temporary folder and
checks the committed one is there, small and shown in the README.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import tifffile
from napari_bioim2im._predict import PredictWidget
from napari_helpers import wait_for

PLUGIN = Path(__file__).resolve().parents[1]
COMMITTED = PLUGIN / "docs" / "screenshot.png"


def test_screenshot(
    make_napari_viewer, qtbot, instance_run: Path, image_file: Path, tmp_path: Path, monkeypatch
) -> None:
    from PIL import Image

    # Paths as a user sees them: a runs folder in the current one.
    shutil.copytree(instance_run, tmp_path / "runs" / "nuclei-instance-2d")
    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 720)
    layer = viewer.add_image(tifffile.imread(image_file), name="cells", colormap="gray")
    widget = PredictWidget(viewer)
    widget.runs_folder.value = Path("runs")
    viewer.window.add_dock_widget(widget, name="Predict (bioim2im)")
    widget.runs.value = (tmp_path / "runs" / "nuclei-instance-2d").resolve()
    widget.layer.value = layer
    widget.predict()
    wait_for(qtbot, widget)
    viewer.layers["seg"].opacity = 0.6
    viewer.reset_view()
    qtbot.wait(200)

    picture = viewer.screenshot(canvas_only=False, flash=False)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert canvas[..., :3].std() > 10, "the canvas was drawn"
    update = os.environ.get("NAPARI_BIOIM2IM_SCREENSHOT") == "1"
    target = COMMITTED if update else tmp_path / "screenshot.png"
    Image.fromarray(np.ascontiguousarray(picture[..., :3])).save(target, optimize=True)
    assert target.stat().st_size < 1_000_000
    assert COMMITTED.is_file() and COMMITTED.stat().st_size < 1_000_000
    assert "docs/screenshot.png" in (PLUGIN / "README.md").read_text(encoding="utf-8")
