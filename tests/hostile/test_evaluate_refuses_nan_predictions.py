"""`evaluate` refuses a regression prediction holding NaN (exit 2, naming the image, no report
written) instead of scoring it; without the NaN the same images are scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hostile_helpers import assert_ok, assert_user_error, invoke


def test_a_nan_in_a_regression_prediction_is_refused(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    for i in range(2):
        truth = rng.random((32, 32), dtype=np.float32)
        pred = truth + np.float32(0.1)
        if i == 0:
            pred[3, 4] = np.nan
        tifffile.imwrite(tmp_path / "truth" / f"im{i}.tif", truth)
        tifffile.imwrite(tmp_path / "pred" / f"im{i}.tif", pred)
    args = ["evaluate", "-p", tmp_path / "pred", "-t", tmp_path / "truth", "--task", "regression"]
    assert_user_error(invoke(*args, "--json", tmp_path / "r.json"), "im0")
    assert not (tmp_path / "r.json").exists()
    # Without the NaN the same images are scored.
    pred = tifffile.imread(tmp_path / "pred" / "im0.tif")
    tifffile.imwrite(tmp_path / "pred" / "im0.tif", np.nan_to_num(pred, nan=0.5))
    assert_ok(invoke(*args))
