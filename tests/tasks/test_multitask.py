"""multitask-3d end to end: one backbone, three heads (nuclear mask, nuclear fluorescence, and
its 2D maximum projection), from a transmitted-light volume; each head beats its baseline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from task_helpers import images, otsu, tiny, train_and_predict

from bioim2im.evaluation import evaluate
from bioim2im.metrics.regression import pearson
from bioim2im.metrics.semantic import dice

pytestmark = pytest.mark.slow


def test_multitask_3d_every_head_beats_its_baseline(synthetic, tmp_path: Path) -> None:
    data, held_out = synthetic("multitask", (16, 64, 64), n_images=6)
    size = ["data.patch_size=[16, 32, 32]", "data.batch_size=4", "predict.roi_size=[16, 64, 64]"]
    run = train_and_predict("multitask-3d", tiny(data, 200, *size, lr=0.01), held_out, tmp_path)
    assert images(run.predictions, "_mip")["img_000"].shape == (64, 64)

    def scores(head: str, truth: str, task: str) -> dict[str, float]:
        return evaluate(run.predictions, held_out / truth, task=task, head=head).aggregate

    def mean_dice(segment: Callable[[np.ndarray], np.ndarray]) -> float:
        found = {k: segment(image).astype(np.uint8) for k, image in transmitted.items()}
        return float(np.mean([dice(found[k], mask)["dice"] for k, mask in masks.items()]))

    def mean_r(predictions: dict[str, np.ndarray], truths: dict[str, np.ndarray]) -> float:
        return abs(float(np.mean([pearson(predictions[k], t) for k, t in truths.items()])))

    transmitted = images(held_out / "IM")
    masks, fluorescence, projections = (images(held_out / f) for f in ("GT", "FLUO", "MIP"))
    # Baselines from the input alone, each with its better polarity: an Otsu threshold of it,
    # itself as the fluorescence, a projection of it as the fluorescence's projection.
    thresholded = max(mean_dice(otsu), mean_dice(lambda image: ~otsu(image)))
    correlated = mean_r(transmitted, fluorescence)
    projected = max(
        mean_r({k: project(t, axis=0) for k, t in transmitted.items()}, projections)
        for project in (np.max, np.min, np.mean)
    )
    seg = scores("seg", "GT", "semantic")
    assert seg["dice"] > thresholded + 0.1, (seg, thresholded)
    fluo = scores("fluo", "FLUO", "regression")
    assert fluo["pearson"] > correlated + 0.2, (fluo, correlated)
    mip = scores("mip", "MIP", "regression")
    assert mip["pearson"] > projected + 0.2, (mip, projected)
