"""Cost maps (CM/ folder, 0 = pixel left out of the loss) in every supervised task: the weight
of each head is 0 wherever the cost map is, on the head's own grid; and garbage labels under a
zero cost map do not hurt what is learned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from task_helpers import PRESETS, images, otsu, tiny, train_and_predict, write_images

from bioim2im.evaluation import evaluate
from bioim2im.metrics.semantic import dice


def with_cost_maps(source: Path, target: Path, axes: str, garbage: bool = False) -> Path:
    """``source`` plus CM/: 0 over the left half (X) of every image, 1 elsewhere; with
    ``garbage``, the labels of GT/ are inverted there."""
    inputs = images(source / "IM")
    write_images(target / "IM", inputs, axes)
    maps = {}
    for name, image in inputs.items():
        maps[name] = np.ones(image.shape, np.uint8)
        maps[name][..., : image.shape[-1] // 2] = 0
    write_images(target / "CM", maps, axes)
    for folder in sorted(p for p in source.iterdir() if p.name not in ("IM", "CM")):
        found = images(folder)
        if garbage:
            found = {
                k: np.where(maps[k] == 0, 1 - (v > 0), v).astype(v.dtype) for k, v in found.items()
            }
        write_images(target / folder.name, found, axes[-next(iter(found.values())).ndim :])
    return target


@pytest.mark.parametrize(
    ("preset", "kind", "shape", "options"),
    [
        ("segmentation-2d", "nuclei", (32, 32), {"label_kind": "semantic"}),
        ("instance-2d", "nuclei", (32, 32), {}),
        ("restoration-2d", "restoration", (32, 32), {}),
        ("labelfree-3d", "labelfree", (8, 32, 32), {}),
        ("superres-3d", "superres", (8, 32, 32), {"scale": 2}),
        ("multitask-3d", "multitask", (8, 32, 32), {}),
    ],
)
def test_every_task_weighs_pixels_by_the_cost_map(
    synthetic, tmp_path: Path, preset: str, kind: str, shape: tuple[int, ...], options: dict
) -> None:
    from bioim2im.config import load_preset
    from bioim2im.data.datasets import training_datasets

    source, _ = synthetic(kind, shape, n_images=2, n_held_out=1, **options)
    data = with_cost_maps(source, tmp_path / "data", "ZYX"[-len(shape) :])
    coarse = images(data / "IM")["img_000"].shape
    loaded = load_preset(
        PRESETS / f"{preset}.toml",
        [f"data.path={data}", f"data.patch_size={list(coarse)}", "data.augment=[]"],
    )
    train, _ = training_datasets(loaded, tmp_path / "run")
    for head in loaded.model.heads:
        weight = train.sample(0)[f"weight/{head}"][0]
        half = weight.shape[-1] // 2
        assert (weight[..., :half] == 0).all(), head
        assert (weight[..., half:] > 0).mean() > 0.9, head


@pytest.mark.slow
def test_garbage_labels_under_a_zero_cost_map_do_not_hurt(synthetic, tmp_path: Path) -> None:
    clean, held_out = synthetic("nuclei", (64, 64), label_kind="semantic")
    data = with_cost_maps(clean, tmp_path / "data", "YX", garbage=True)
    size = ["data.patch_size=[64, 64]", "data.batch_size=4", "predict.roi_size=[64, 64]"]
    run = train_and_predict("segmentation-2d", tiny(data, 100, *size), held_out, tmp_path)
    report = evaluate(run.predictions, held_out / "GT", task="semantic", head="seg")

    # Scored on whole held-out images, left halves included: as good as clean training.
    raw, truths = images(held_out / "IM"), images(held_out / "GT")
    thresholded = np.mean(
        [dice(otsu(raw[k]).astype(np.uint8), t)["dice"] for k, t in truths.items()]
    )
    assert report.aggregate["dice"] > thresholded + 0.02, (report.aggregate, thresholded)
