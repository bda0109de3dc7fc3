"""The CUDA paths: mixed-precision training (bf16 autocast; fp16 with a GradScaler), resuming on
the GPU, pinned batches, prediction on the GPU equal to the CPU's, and NCCL DDP.

Every test here needs CUDA and is skipped without it (``pytest -m gpu`` runs only these).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_presets import tiny_unet_toml

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

# The tiny preset (tests/tiny_presets.py) on 64 x 64 patches, deeper, with a worker process.
PRESET = {
    "data.patch_size": [64, 64],
    "data.batch_size": 4,
    "data.num_workers": 1,
    "data.augment": [{"name": "flip"}],
    "model.backbone.channels": [8, 16, 32],
    "model.backbone.strides": [2, 2],
    "model.backbone.num_res_units": 1,
    "train.steps": 12,
    "train.log_every": 2,
    "train.val_every": 6,
    "train.checkpoint_every": 4,
    "train.seed": 5,
    "predict.roi_size": [64, 64],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bioim2im.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("gpu-data")
    write_dataset(root, kind="nuclei", n_images=6, shape=(128, 128), seed=0, label_kind="semantic")
    return root


@pytest.fixture
def preset(tmp_path: Path, data: Path) -> Path:
    path = tmp_path / "gpu.toml"
    path.write_text(tiny_unet_toml(data, PRESET), encoding="utf-8")
    return path


def losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_runs_on_the_gpu(preset, tmp_path, precision) -> None:
    from bioim2im.api import train
    from bioim2im.model.checkpoint import load_checkpoint

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    run = tmp_path / precision
    train(preset, overrides=[f"train.amp={precision}"], run_dir=run)
    values = losses(run)
    assert len(values) == 6 and all(math.isfinite(v) for v in values)
    assert values[-1] < values[0]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 12
    # The weights stay float32 (autocast computes in low precision, the optimizer does not).
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    scale = state["scaler"].get("scale")
    if precision == "fp16":
        assert scale is not None and scale > 0  # the GradScaler ran
    else:
        assert scale is None  # bf16 needs no loss scaling


def test_a_run_resumed_on_the_gpu_ends_where_an_uninterrupted_one_does(preset, tmp_path) -> None:
    from bioim2im.api import train
    from bioim2im.model.checkpoint import load_checkpoint

    torch.backends.cudnn.deterministic = True
    try:
        straight = tmp_path / "straight"
        train(preset, overrides=["train.amp=off"], run_dir=straight)
        resumed = tmp_path / "resumed"
        train(preset, overrides=["train.amp=off", "train.steps=8"], run_dir=resumed)
        assert load_checkpoint(resumed / "checkpoints" / "last.pt")["step"] == 8
        train(resume=resumed, overrides=["train.steps=12"])
    finally:
        torch.backends.cudnn.deterministic = False
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 12
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-5)


def test_training_batches_come_pinned_for_fast_copies(data) -> None:
    from bioim2im.data.loader import make_loader

    dataset = torch.utils.data.TensorDataset(torch.zeros(8, 1, 4, 4))
    batch = next(iter(make_loader(dataset, batch_size=2)))
    assert batch[0].is_pinned()


@pytest.mark.parametrize("channels_last", ["false", "true", '"auto"'])
def test_prediction_on_the_gpu_equals_prediction_on_the_cpu(preset, tmp_path, channels_last):
    from bioim2im.api import train
    from bioim2im.formats import load_model
    from bioim2im.io import open_image
    from bioim2im.io.tiff import write_tiff
    from bioim2im.prediction.job import predict_in_memory

    run = tmp_path / "run"
    train(preset, overrides=["train.steps=4", "train.val_every=4"], run_dir=run)
    image = np.random.default_rng(0).random((300, 260), dtype=np.float32)
    write_tiff(tmp_path / "cells.tif", image, axes="YX")
    overrides = [
        "train.amp=off",
        "predict.block_size=[128, 128]",
        f"predict.channels_last={channels_last}",
    ]
    outputs = {}
    for device in ("cpu", "cuda"):
        model = load_model(run, overrides, device=device)
        # Read block by block, as from a file: blocks, sums handed on, pinned copies.
        outputs[device] = predict_in_memory(model, open_image(tmp_path / "cells.tif"))["seg"]
    np.testing.assert_allclose(outputs["cuda"], outputs["cpu"], atol=1e-4)

    # Mixed precision on the GPU (the default there) stays close to float32.
    model = load_model(run, ["predict.block_size=[128, 128]"], device="cuda")
    assert model.amp_dtype in (torch.bfloat16, torch.float16)
    low = predict_in_memory(model, open_image(tmp_path / "cells.tif"))["seg"]
    np.testing.assert_allclose(low, outputs["cpu"], atol=0.1)


def test_one_process_ddp_over_nccl(preset, tmp_path) -> None:
    from bioim2im.model.checkpoint import load_checkpoint

    run = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
        "-m", "bioim2im", "train", str(preset), "--run-dir", str(run),
        "--set", "train.steps=6", "--set", "train.val_every=6",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6
    assert all(math.isfinite(v) for v in losses(run))
