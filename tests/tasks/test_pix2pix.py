"""pix2pix-2d end to end: fluorescence predicted from transmitted light by a generator trained
with L1 + a PatchGAN's adversarial loss beats the input at its best brightness and contrast."""

from __future__ import annotations

import json
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

pytestmark = pytest.mark.slow

# A PatchGAN judging 34x34 windows (2 layers), 16 channels wide: as small as the generator.
SMALL = [
    "data.patch_size=[64, 64]",
    "data.batch_size=4",
    "predict.roi_size=[96, 96]",
    "adversarial.discriminator={ name = 'patchgan', channels = 16, layers = 2 }",
]


def test_pix2pix_2d_predicts_the_fluorescence(synthetic, tmp_path: Path) -> None:
    data, held_out = synthetic("labelfree", (96, 96))
    run = train_and_predict("pix2pix-2d", tiny(data, 80, *SMALL), held_out, tmp_path)

    records = [
        json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    adversarial = [(r["loss/adv_g"], r["loss/adv_d"]) for r in records if "loss/adv_g" in r]
    assert adversarial and np.isfinite(adversarial).all()

    # Scored against the truth normalised as training normalised it (percentiles 1 and 99.8).
    truths = {
        k: percentile_normalized(t, lower=1.0, upper=99.8)
        for k, t in images(held_out / "GT").items()
    }
    truth = write_images(tmp_path / "truth", truths, axes="YX")
    report = evaluate(run.predictions, truth, task="regression", head="translated").aggregate
    inputs = images(held_out / "IM")
    baseline = {k: fitted(inputs[k], t) for k, t in truths.items()}
    fitted_folder = write_images(tmp_path / "fitted", baseline, axes="YX")
    base = evaluate(fitted_folder, truth, task="regression").aggregate
    # The fitted input correlates with the truth (r about 0.5) but keeps its halos and texture.
    assert report["pearson"] > base["pearson"] + 0.1, (report, base)
    assert report["ssim"] > base["ssim"] + 0.1, (report, base)
    assert report["mae"] < 0.85 * base["mae"], (report, base)
