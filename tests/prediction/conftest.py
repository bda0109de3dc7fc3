"""Tiny trained models (2D with two heads, 3D with one) and synthetic images to predict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from predict_helpers import nuclei_image

from bioim2im.data.synthetic import write_dataset
from bioim2im.io import open_image
from bioim2im.io.tiff import write_tiff

PRESET_2D = """
extends = "segmentation-2d"
[data]
path = "{data}"
patch_size = [32, 32]
batch_size = 4
num_workers = 0
augment = []
[model]
features = 8
[model.backbone]
name = "unet"
channels = [8, 16]
strides = [2]
num_res_units = 0
[model.heads.prob]
name = "conv"
task = "semantic"
loss = {{ name = "dice_ce", sigmoid = true }}
postprocess = [{{ name = "sigmoid" }}]
metrics = []
[train]
steps = 40
val_every = 40
checkpoint_every = 40
log_every = 40
seed = 0
optimizer = {{ name = "adamw", lr = 0.01 }}
scheduler = {{ name = "constant" }}
[logging]
progress = "lines"
snapshots = false
[predict]
roi_size = [32, 32]
"""

# A 2D model whose "seg" head upsamples twice (targets at twice the input's resolution).
PRESET_UPSAMPLING = PRESET_2D.replace(
    "[model.heads.prob]", "[model.heads.seg]\nupsample = 2\n[model.heads.prob]\nupsample = 2"
).replace("steps = 40", "steps = 10")

PRESET_3D = """
extends = "segmentation-3d"
[data]
path = "{data}"
patch_size = [8, 16, 16]
batch_size = 2
num_workers = 0
augment = []
[model]
features = 4
[model.backbone]
name = "unet"
channels = [4, 8]
strides = [2]
num_res_units = 0
[model.heads.seg]
name = "conv"
task = "semantic"
out_channels = 1
loss = {{ name = "dice_ce", sigmoid = true }}
postprocess = [{{ name = "sigmoid" }}]
metrics = []
[train]
steps = 6
val_every = 6
checkpoint_every = 6
log_every = 6
optimizer = {{ name = "adamw", lr = 0.01 }}
scheduler = {{ name = "constant" }}
checkpoint_metric = "val/loss"
checkpoint_mode = "min"
[logging]
progress = "lines"
snapshots = false
[predict]
roi_size = [8, 16, 16]
"""


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(root: Path, preset: str, data: Path) -> Path:
    from bioim2im.api import train

    path = root / "preset.toml"
    path.write_text(preset.format(data=data), encoding="utf-8")
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
    return _train(root, PRESET_2D, data)


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
    return _train(root, PRESET_UPSAMPLING, data)


@pytest.fixture(scope="session")
def run_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory: 3D model, one head "seg" (sigmoid), windows of 8 x 16 x 16."""
    root = tmp_path_factory.mktemp("model3d")
    data = write_dataset(
        root / "data", kind="nuclei", n_images=2, shape=(16, 32, 32), seed=1, label_kind="semantic"
    )
    return _train(root, PRESET_3D, data)


@pytest.fixture
def images_2d(tmp_path: Path) -> Path:
    """A folder of three 64 x 64 images."""
    folder = tmp_path / "images"
    for i in range(3):
        nuclei_image(folder / f"cells_{i}.tif", (64, 64), seed=10 + i)
    return folder
