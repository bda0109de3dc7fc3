"""Tiny synthetic datasets and presets for end-to-end engine tests (CPU, seconds each)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TINY_PRESET = """
extends = "segmentation-2d"
[data]
path = "{data}"
patch_size = [32, 32]
batch_size = 4
num_workers = 0
cache = "memory"
augment = [{{ name = "flip" }}]
[model]
features = 8
[model.backbone]
name = "unet"
channels = [8, 16, 32]
strides = [2, 2]
num_res_units = 0
[train]
steps = 40
log_every = 5
val_every = 20
checkpoint_every = 10
seed = 3
optimizer = {{ name = "adamw", lr = 0.01 }}
scheduler = {{ name = "constant" }}
[logging]
progress = "lines"
"""


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
        path.write_text(TINY_PRESET.format(data=nuclei_data) + extra)
        return path

    return make
