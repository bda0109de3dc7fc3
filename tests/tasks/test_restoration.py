"""restoration-2d end to end (CARE): noisy images in, clean ones out, trained on pairs; the
restored images are closer to the clean ones than the noisy inputs are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from task_helpers import (
    fitted,
    images,
    percentile_normalized,
    tiny,
    train_and_predict,
    write_images,
)

from bioim2im.evaluation import evaluate
from bioim2im.metrics.regression import psnr

pytestmark = pytest.mark.slow


def test_restoration_2d_beats_the_noisy_input(synthetic, tmp_path: Path) -> None:
    data, held_out = synthetic("restoration", (64, 64))
    size = ["data.patch_size=[64, 64]", "data.batch_size=4", "predict.roi_size=[64, 64]"]
    run = train_and_predict("restoration-2d", tiny(data, 80, *size), held_out, tmp_path)

    # The model predicts the clean image scaled as training scaled the targets.
    noisy, clean = images(held_out / "IM"), images(held_out / "GT")
    truths = {k: percentile_normalized(c) for k, c in clean.items()}
    report = evaluate(
        run.predictions, write_images(tmp_path / "truth", truths, "YX"), head="restored"
    )
    # The noisy input at its best brightness and contrast.
    baseline = np.mean([psnr(fitted(noisy[k], t), t) for k, t in truths.items()])
    assert report.task == "regression"
    assert report.aggregate["psnr"] > baseline + 3, (report.aggregate, baseline)
