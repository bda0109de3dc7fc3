"""Images smaller than the training patch train, validate and predict correctly: the patch is
padded around the image (a fact of the data, whatever the preset says), the loss and the
validation metrics count the image alone, and predictions have the image's shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bioim2im.io.tiff import write_tiff

PRESET = """
extends = "segmentation-2d"
[data]
path = "{data}"
val_path = "{data}"
patch_size = [32, 32]
batch_size = 2
num_workers = 0
augment = []
normalize = {{ name = "fixed_range", min = 0.0, max = 1.0 }}
[model]
features = 4
[model.backbone]
name = "unet"
channels = [4, 8]
strides = [2]
num_res_units = 0
[train]
steps = 2
val_every = 2
[logging]
progress = "lines"
snapshots = false
"""


def _masks(folder: Path, shapes: list[tuple[int, ...]]) -> Path:
    """Images that are their own 0/1 mask: a bright square (cube) near one corner."""
    for i, shape in enumerate(shapes):
        mask = np.zeros(shape, np.uint8)
        mask[tuple(slice(1, max(2, n // 2)) for n in shape)] = 1
        axes = "ZYX"[-len(shape) :]
        write_tiff(folder / "IM" / f"m{i}.tif", mask.astype(np.float32), axes=axes)
        write_tiff(folder / "GT" / f"m{i}.tif", mask, axes=axes)
    return folder


class Oracle(nn.Module):
    """A perfect 'network' for images that are their own mask: logits from the image."""

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg": 20.0 * (image - 0.5)}


def test_validation_scores_the_image_not_the_padding_around_it(tmp_path: Path) -> None:
    from bioim2im.config import load_preset
    from bioim2im.data.datasets import training_datasets
    from bioim2im.distributed import DistEnv
    from bioim2im.plugin.manager import get_registry
    from bioim2im.training.trainer import Trainer
    from bioim2im.training.validation import validate

    data = _masks(tmp_path / "data", [(20, 24), (9, 30)])
    preset_file = tmp_path / "p.toml"
    preset_file.write_text(PRESET.format(data=data))
    preset = load_preset(preset_file)
    registry = get_registry()
    datasets = training_datasets(preset, tmp_path / "run", registry=registry)
    env = DistEnv(0, 0, 1, torch.device("cpu"))
    trainer = Trainer(preset, tmp_path / "run", env, registry, datasets)

    found = validate(trainer, Oracle())

    # The padding mirrors the image (and its square), but nothing there is labelled: scoring
    # it would count the mirrored squares as false positives.
    assert found["val/seg/dice"] == 1.0, found


def test_images_smaller_than_the_patch_train_and_predict_at_their_size(tmp_path: Path) -> None:
    from bioim2im.api import predict, train
    from bioim2im.data.crowded import crowded_nuclei

    data = tmp_path / "data"
    # Smaller than the 32 x 32 patch along one axis, along both, and much smaller.
    shapes = [(20, 40), (31, 17), (7, 9)]
    for i, shape in enumerate(shapes):
        image, labels = crowded_nuclei(shape, seed=i, min_radius=3)
        write_tiff(data / "IM" / f"n{i}.tif", image, axes="YX")
        write_tiff(data / "GT" / f"n{i}.tif", (labels > 0).astype(np.uint8), axes="YX")
    preset = tmp_path / "p.toml"
    preset.write_text(
        PRESET.format(data=data).replace(
            'normalize = { name = "fixed_range", min = 0.0, max = 1.0 }', ""
        )
    )
    run = tmp_path / "run"
    result = train(preset, overrides=["train.steps=6", "train.val_every=3"], run_dir=run)
    assert result.step == 6
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    for shape in shapes:
        image = np.random.default_rng(0).random(shape, dtype=np.float32)
        assert predict(run, image)["seg"].shape == (1, *shape)
