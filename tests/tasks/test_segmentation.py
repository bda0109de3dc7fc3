"""segmentation-2d / segmentation-3d end to end: one class, classes that exclude each other
(softmax over the classes, class weights) and classes that overlap (one sigmoid mask per
class); each beats a global Otsu threshold of the raw image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.segmentation import expand_labels
from task_helpers import images, otsu, tiny, train_and_predict, write_images

from bioim2im.evaluation import evaluate
from bioim2im.metrics.semantic import dice

pytestmark = pytest.mark.slow

SIZE_2D = ["data.patch_size=[64, 64]", "data.batch_size=4", "predict.roi_size=[64, 64]"]


def mean_dice(predictions: dict[str, np.ndarray], truths: dict[str, np.ndarray]) -> float:
    return float(np.mean([dice(predictions[k], truths[k])["dice"] for k in truths]))


def test_binary_segmentation_2d_beats_otsu(synthetic, tmp_path: Path) -> None:
    data, held_out = synthetic("nuclei", (64, 64), label_kind="semantic")
    run = train_and_predict("segmentation-2d", tiny(data, 100, *SIZE_2D), held_out, tmp_path)
    report = evaluate(run.predictions, held_out / "GT", task="semantic", head="seg")

    raw, truths = images(held_out / "IM"), images(held_out / "GT")
    background = mean_dice({k: np.zeros_like(t) for k, t in truths.items()}, truths)
    thresholded = mean_dice({k: otsu(raw[k]).astype(np.uint8) for k in raw}, truths)
    assert background == 0.0
    assert report.aggregate["dice"] > thresholded + 0.02, (report.aggregate, thresholded)


def test_exclusive_classes_3d_softmax_with_class_weights(synthetic, tmp_path: Path) -> None:
    # Classes 0 background, 1 nucleus interior, 2 nucleus boundary: each voxel is one of them.
    data, held_out = synthetic("nuclei", (16, 64, 64), n_images=6, label_kind="boundary")
    exclusive = [
        "data.patch_size=[16, 32, 32]",
        "data.batch_size=4",
        "data.class_balanced=true",
        "predict.roi_size=[16, 64, 64]",
        "model.heads.seg.out_channels=3",
        'model.heads.seg.loss={ name = "dice_ce", sigmoid = false, softmax = true, '
        "to_onehot_y = true, class_weights = [0.5, 1.0, 2.0] }",
        'model.heads.seg.postprocess=[{ name = "softmax" }, { name = "argmax" }]',
    ]
    run = train_and_predict("segmentation-3d", tiny(data, 80, *exclusive), held_out, tmp_path)
    report = evaluate(run.predictions, held_out / "GT", task="semantic", head="seg")

    # A threshold finds nuclei but not their boundaries: class 1 for all it finds.
    raw, truths = images(held_out / "IM"), images(held_out / "GT")
    thresholded = mean_dice({k: otsu(raw[k]).astype(np.uint8) for k in raw}, truths)
    assert set(np.unique(images(run.predictions, "_seg")["img_000"])) == {0, 1, 2}
    assert report.aggregate["dice/2"] > 0.4, report.aggregate
    assert report.aggregate["dice"] > thresholded + 0.1, (report.aggregate, thresholded)


def overlapping_classes(source: Path, target: Path) -> Path:
    """``source`` with GT as two masks that overlap: nuclei, and cells (nuclei grown 3 pixels)."""
    write_images(target / "IM", images(source / "IM"), "YX")
    masks = {
        name: np.stack([labels > 0, expand_labels(labels.astype(np.int32), 3) > 0]).astype(np.uint8)
        for name, labels in images(source / "GT").items()
    }
    write_images(target / "GT", masks, "CYX")
    return target


def test_overlapping_classes_2d_one_sigmoid_mask_per_class(synthetic, tmp_path: Path) -> None:
    instances, instances_held_out = synthetic("nuclei", (64, 64))
    data = overlapping_classes(instances, tmp_path / "data")
    held_out = overlapping_classes(instances_held_out, tmp_path / "held_out")
    run = train_and_predict(
        "segmentation-2d",
        tiny(data, 100, *SIZE_2D, "model.heads.seg.out_channels=2"),
        held_out,
        tmp_path,
    )
    predictions, truths = images(run.predictions, "_seg"), images(held_out / "GT")
    assert predictions["img_000"].shape == (2, 64, 64)
    raw = images(held_out / "IM")
    # Otsu finds nuclei, nearly as well as the network; cells (beyond the stain) it cannot.
    for channel, margin in ((0, 0.0), (1, 0.2)):
        learned = mean_dice(
            {k: p[channel] for k, p in predictions.items()},
            {k: t[channel] for k, t in truths.items()},
        )
        thresholded = mean_dice(
            {k: otsu(raw[k]).astype(np.uint8) for k in raw},
            {k: t[channel] for k, t in truths.items()},
        )
        assert learned > thresholded + margin, (channel, learned, thresholded)
