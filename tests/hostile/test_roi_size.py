"""Issue 11, point 4: ``predict.roi_size`` was not checked: ``[0, 0]`` passed `check` and
crashed `predict`; ``[100000, 100000]`` tried to allocate 74 GiB. The schema refuses sizes
below 1, and a window larger than the image is clipped to the image (rounded up to what the
network accepts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import (
    Limits,
    assert_ok,
    assert_user_error,
    changes,
    invoke,
    run,
    snapshot,
)


@pytest.mark.parametrize("roi", ["[0, 0]", "[0, 32]", "[32, -1]", "[-32, -32]"])
def test_check_refuses_a_window_below_one_pixel(tiny_preset, roi: str) -> None:
    assert_user_error(
        invoke("check", tiny_preset(), "--set", f"predict.roi_size={roi}"), "predict.roi_size"
    )


def test_predict_refuses_a_window_below_one_pixel(
    trained_run: Path, nuclei_data: Path, tmp_path: Path
) -> None:
    before = snapshot(tmp_path)
    result = invoke(
        "predict",
        trained_run,
        "-i",
        nuclei_data / "IM",
        "-o",
        tmp_path / "out",
        "--set",
        "predict.roi_size=[0, 0]",
    )
    assert_user_error(result, "predict.roi_size")
    assert changes(before, snapshot(tmp_path)) == []


def test_a_window_larger_than_the_image_is_clipped_to_it(
    trained_run: Path, nuclei_data: Path, tmp_path: Path
) -> None:
    import tifffile

    image = nuclei_data / "IM" / "img_000.tif"
    args = ["predict", trained_run, "-i", image, "--format", "tiff"]
    assert_ok(invoke(*args, "-o", tmp_path / "whole", "--set", "predict.roi_size=[64, 64]"))
    # 2 GiB of memory more than the test process holds: 74 GiB is out of reach.
    result = run(
        *args,
        "-o",
        tmp_path / "huge",
        "--set",
        "predict.roi_size=[100000, 100000]",
        cwd=tmp_path,
        limits=Limits(extra_memory=2 << 30),
        timeout=120,
    )
    assert_ok(result)
    expected = tifffile.imread(tmp_path / "whole" / "img_000_seg.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "huge" / "img_000_seg.tif"), expected)
