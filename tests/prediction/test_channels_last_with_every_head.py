"""Channels-last runs every network: a 3D backbone with a 3D -> 2D projection head (2D layers
after 3D ones) trains with ``train.channels_last`` and predicts with every
``predict.channels_last`` setting, over full batches of windows, as it does contiguous."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bioim2im.data.synthetic import write_dataset
from bioim2im.io import open_image

SMALL = [
    "data.patch_size=[8, 32, 32]",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.augment=[]",
    "model.features=4",
    "model.backbone.channels=[4, 8]",
    "model.backbone.strides=[2]",
    "model.backbone.num_res_units=0",
    "train.steps=2",
    "train.val_every=2",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.scheduler.warmup_steps=0",
    "logging.progress=lines",
    "logging.snapshots=false",
    # 25 windows of 8 x 16 x 16 over a 8 x 64 x 64 image: 12 full batches of 2, more than
    # "auto" measures on.
    "predict.roi_size=[8, 16, 16]",
    "predict.overlap=0.25",
    "predict.batch_size=2",
]


@pytest.fixture(scope="module")
def projection_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bioim2im.api import train

    root = tmp_path_factory.mktemp("projection")
    data = write_dataset(root / "data", kind="multitask", n_images=3, shape=(8, 64, 64), seed=0)
    overrides = [f"data.path={data}", *SMALL, "train.channels_last=true"]
    result = train("multitask-3d", overrides=overrides, run_dir=root / "run")
    assert result.step == 2
    return root / "run"


def test_a_projection_head_predicts_alike_in_every_layout(projection_run: Path, tmp_path, cli):
    image = projection_run.parent / "data" / "IM" / "img_000.tif"
    outputs = {}
    for setting in ("false", "true", '"auto"'):
        folder = tmp_path / setting.strip('"')
        result = cli(
            "predict", projection_run, "-i", image, "-o", folder,
            "--format", "tiff", "--set", f"predict.channels_last={setting}",
        )  # fmt: skip
        assert result.code == 0, result.err
        outputs[setting] = {
            head: open_image(folder / f"img_000_{head}.tif").read() for head in ("mip", "fluo")
        }
    assert outputs["false"]["mip"].shape == (64, 64)
    for setting in ("true", '"auto"'):
        for head, values in outputs["false"].items():
            np.testing.assert_allclose(outputs[setting][head], values, atol=1e-4, err_msg=head)
