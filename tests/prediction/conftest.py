"""Tiny trained models (2D with two heads, 3D with one) and synthetic images to predict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from predict_helpers import nuclei_image

from bioim2im.data.synthetic import write_dataset
from bioim2im.io import open_image
from bioim2im.io.tiff import write_tiff
from tiny_presets import DROP, SIGMOID_HEAD, tiny_unet_toml

# The tiny preset (tests/tiny_presets.py) with a second head, "prob", that saves probabilities.
PRESET_2D = {
    "data.batch_size": 4,
    "model.heads.prob": SIGMOID_HEAD,
    "train.steps": 40,
    "train.val_every": 40,
    "train.checkpoint_every": 40,
    "train.log_every": 40,
}

# A 2D model whose heads upsample twice (targets at twice the input's resolution).
PRESET_UPSAMPLING = {
    "model.heads.seg.upsample": 2,
    **PRESET_2D,
    "model.heads.prob": {**SIGMOID_HEAD, "upsample": 2},
    "train.steps": 10,
}

PRESET_3D = {
    "data.patch_size": [8, 16, 16],
    "model.features": 4,
    "model.backbone.channels": [4, 8],
    "model.heads.seg": {**SIGMOID_HEAD, "out_channels": 1},
    "train.steps": 6,
    "train.val_every": 6,
    "train.checkpoint_every": 6,
    "train.log_every": 6,
    "train.seed": DROP,
    "train.checkpoint_metric": "val/loss",
    "train.checkpoint_mode": "min",
    "predict.roi_size": [8, 16, 16],
}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(root: Path, changes: dict[str, Any], data: Path, extends: str) -> Path:
    """A run of the tiny preset with ``changes``, trained on ``data``."""
    from bioim2im.api import train

    path = root / "preset.toml"
    path.write_text(tiny_unet_toml(data, changes, extends=extends), encoding="utf-8")
    train(path, run_dir=root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def run_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory: 2D nuclei model, heads "seg" (sigmoid, threshold: a mask) and "prob"
    (sigmoid: probabilities), windows of 32 x 32."""
    root = tmp_path_factory.mktemp("model2d")
    data = write_dataset(
        root / "data", kind="nuclei", n_images=4, shape=(64, 64), seed=0, label_kind="semantic"
    )
    return _train(root, PRESET_2D, data, "segmentation-2d")


@pytest.fixture(scope="session")
def run_upsampling(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``run_2d`` but both heads output twice the input's resolution."""
    root = tmp_path_factory.mktemp("upsampling")
    data = write_dataset(
        root / "data", kind="nuclei", n_images=3, shape=(64, 64), seed=2, label_kind="semantic"
    )
    for path in (data / "GT").glob("*.tif"):
        mask = open_image(path).read()
        write_tiff(path, np.kron(mask, np.ones((2, 2), mask.dtype)), axes="YX")
    return _train(root, PRESET_UPSAMPLING, data, "segmentation-2d")


@pytest.fixture(scope="session")
def run_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory: 3D model, one head "seg" (sigmoid), windows of 8 x 16 x 16."""
    root = tmp_path_factory.mktemp("model3d")
    data = write_dataset(
        root / "data", kind="nuclei", n_images=2, shape=(16, 32, 32), seed=1, label_kind="semantic"
    )
    return _train(root, PRESET_3D, data, "segmentation-3d")


@pytest.fixture
def images_2d(tmp_path: Path) -> Path:
    """A folder of three 64 x 64 images."""
    folder = tmp_path / "images"
    for i in range(3):
        nuclei_image(folder / f"cells_{i}.tif", (64, 64), seed=10 + i)
    return folder
