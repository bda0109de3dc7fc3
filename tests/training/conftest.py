"""Tiny synthetic datasets and presets for end-to-end engine tests (CPU, seconds each)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tiny_presets import DROP, tiny_unet_toml

# The tiny preset (tests/tiny_presets.py) as the training tests train it: 40 steps of a deeper
# U-Net on cached data, four flipped patches a batch.
TRAINING = {
    "data.batch_size": 4,
    "data.cache": "memory",
    "data.augment": [{"name": "flip"}],
    "model.backbone.channels": [8, 16, 32],
    "model.backbone.strides": [2, 2],
    "train.steps": 40,
    "train.val_every": 20,
    "train.checkpoint_every": 10,
    "train.seed": 3,
    "logging.snapshots": DROP,
    "predict": DROP,
}


@pytest.fixture(scope="session")
def nuclei_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bioim2im.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("nuclei")
    write_dataset(root, kind="nuclei", n_images=6, shape=(64, 64), seed=0, label_kind="semantic")
    return root


@pytest.fixture
def tiny_preset(tmp_path: Path, nuclei_data: Path) -> Callable[..., Path]:
    def make(extra: str = "") -> Path:
        path = tmp_path / "tiny.toml"
        path.write_text(tiny_unet_toml(nuclei_data, TRAINING) + extra)
        return path

    return make
