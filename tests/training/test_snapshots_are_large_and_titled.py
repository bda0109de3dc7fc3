"""Validation snapshots are readable: every panel at least 256 pixels (a patch enlarged whole
times, its pixels kept), a title above each (input / target / prediction of a head), and for 3D
the middle slice and a maximum projection over Z; TensorBoard gets the same image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bioim2im.training.plots import PANEL, TITLE, save_montage


def test_a_2d_row_is_three_titled_panels_of_256_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    row = [rng.random((1, 32, 40)).astype(np.float32) for _ in range(3)]
    titles = [["input", "target: seg", "prediction: seg"]]
    montage = save_montage([row], tmp_path / "s.png", titles)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png")), montage)
    assert montage.shape == (PANEL + TITLE + 4, 3 * 320 + 2 * 4)  # 32 x 40 enlarged 8 times
    for index in range(3):
        x = index * (320 + 4)
        title, panel = montage[:TITLE, x : x + 320], montage[TITLE : TITLE + PANEL, x : x + 320]
        assert title.max() == 255  # the title's text
        # The patch's pixels, each an 8 x 8 block.
        assert np.all(panel.reshape(32, 8, 40, 8).std(axis=(1, 3)) == 0)
        assert np.corrcoef(panel[::8, ::8].ravel(), row[index][0].ravel())[0, 1] > 0.99


def test_a_3d_row_shows_the_middle_slice_and_a_maximum_projection(tmp_path: Path) -> None:
    volume = np.zeros((1, 9, 16, 16), np.float32)
    volume[0, 4, 2:6, 2:6] = 1.0  # in the middle slice
    volume[0, 0, 10:14, 10:14] = 1.0  # only in the projection
    montage = save_montage([[volume, volume, volume]], tmp_path / "s.png", [["a", "b", "c"]])
    assert montage.shape[0] == 2 * (PANEL + TITLE + 4)
    middle, projection = montage[TITLE : TITLE + PANEL, :PANEL], montage[-4 - PANEL : -4, :PANEL]
    assert middle[4 * 16, 4 * 16] == 255 and middle[12 * 16, 12 * 16] == 0
    assert projection[4 * 16, 4 * 16] == 255 and projection[12 * 16, 12 * 16] == 255
