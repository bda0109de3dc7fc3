"""labelfree-3d end to end: fluorescence predicted from transmitted light (regression on a
z-scored target) correlates with the true fluorescence, which the input itself does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from task_helpers import images, tiny, train_and_predict

from bioim2im.evaluation import evaluate
from bioim2im.metrics.regression import pearson

pytestmark = pytest.mark.slow


def test_labelfree_3d_predicts_the_fluorescence(synthetic, tmp_path: Path) -> None:
    data, held_out = synthetic("labelfree", (16, 64, 64), n_images=6)
    size = ["data.patch_size=[16, 32, 32]", "data.batch_size=4", "predict.roi_size=[16, 64, 64]"]
    run = train_and_predict("labelfree-3d", tiny(data, 200, *size, lr=0.01), held_out, tmp_path)
    report = evaluate(run.predictions, held_out / "GT", task="regression", head="fluo")

    transmitted, fluorescence = images(held_out / "IM"), images(held_out / "GT")
    # The input itself as a prediction, with whichever sign correlates better.
    baseline = abs(np.mean([pearson(transmitted[k], f) for k, f in fluorescence.items()]))
    assert report.aggregate["pearson"] > max(0.5, baseline + 0.25), (report.aggregate, baseline)
