"""Adversarial training (GanTrainer): every network learns, a resumed run ends where an
uninterrupted one does, and settings that cannot work are refused with their keys named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bioim2im.api import train
from bioim2im.config import load_preset
from bioim2im.data.datasets import training_datasets
from bioim2im.data.loader import make_loader
from bioim2im.distributed import DistEnv
from bioim2im.model.checkpoint import load_checkpoint
from bioim2im.plugin.manager import get_registry
from bioim2im.training.gan import GanTrainer, ImagePool
from tiny_presets import DROP, tiny_unet_toml

# Networks a few kilobytes big on 32x32 patches: a step takes milliseconds (the tiny preset of
# tests/tiny_presets.py, halved, over a GAN preset).
TINY = {
    "data.augment": DROP,
    "model.features": 4,
    "model.backbone.channels": [4, 8],
    "train.steps": 6,
    "train.log_every": 1,
    "train.val_every": 3,
    "train.checkpoint_every": 3,
    "train.seed": DROP,
    "train.optimizer": DROP,
    "predict": DROP,
    "adversarial.discriminator": {"name": "patchgan", "channels": 4, "layers": 1},
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paired images for pix2pix; for CycleGAN, inputs and targets under unrelated names."""
    from bioim2im.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("gan")
    paired = write_dataset(root / "paired", kind="labelfree", n_images=4, shape=(48, 48))
    unpaired = root / "unpaired"
    (unpaired / "IM").mkdir(parents=True)
    (unpaired / "GT").mkdir()
    for path in (paired / "IM").iterdir():
        shutil.copy(path, unpaired / "IM" / f"cells_{path.name}")
    for path in sorted((paired / "GT").iterdir())[1:]:
        shutil.copy(path, unpaired / "GT" / f"nuclei_{path.name}")
    return {"pix2pix-2d": paired, "cyclegan-2d": unpaired}


@pytest.fixture(params=["pix2pix-2d", "cyclegan-2d"])
def preset(request: pytest.FixtureRequest, datasets: dict[str, Path], tmp_path: Path) -> Path:
    path = tmp_path / f"{request.param}.toml"
    path.write_text(tiny_unet_toml(datasets[request.param], TINY, extends=request.param))
    return path


def _trainer(preset: Path, run: Path, *overrides: str) -> GanTrainer:
    loaded = load_preset(preset, overrides)
    env = DistEnv(0, 0, 1, torch.device("cpu"))
    data = training_datasets(loaded, run, check=False)
    return GanTrainer(loaded, run, env, get_registry(), data)


def _copies(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _all_changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return all(not torch.equal(before[name], p) for name, p in module.named_parameters())


@pytest.mark.parametrize(
    "setting",
    ["train.accumulate=1", "train.accumulate=2", "train.amp='bf16'", "train.channels_last=true"],
)
def test_one_step_updates_every_network_once(preset: Path, tmp_path: Path, setting: str) -> None:
    trainer = _trainer(preset, tmp_path, setting)
    networks = {"generator": trainer.model, "discriminators": trainer.discriminators}
    if trainer.generator_ba is not None:
        networks["generator B -> A"] = trainer.generator_ba
    before = {name: _copies(network) for name, network in networks.items()}
    batches = iter(make_loader(trainer.train_data, batch_size=trainer.micro_batch))

    values = trainer.train_step(batches)

    for name, network in networks.items():
        assert _all_changed(before[name], network), name
    for optimizer in (trainer.optimizer, trainer.discriminator_optimizer):
        steps = {float(state["step"]) for state in optimizer.state.values()}
        assert steps == {1.0}
    assert {"loss", "loss/adv_g", "loss/adv_d"} <= set(values)
    if trainer.generator_ba is not None:
        assert {"loss/cycle_a", "loss/cycle_b"} <= set(values)
    assert all(torch.isfinite(torch.tensor(v)) for v in values.values())


def test_the_generators_adversarial_loss_leaves_the_discriminator_alone(
    preset: Path, tmp_path: Path
) -> None:
    trainer = _trainer(preset, tmp_path)
    channels = next(trainer.discriminators["b"].parameters()).shape[1]
    fake = torch.rand(2, channels, 32, 32, requires_grad=True)

    trainer._fooling_loss("b", fake).backward()

    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in trainer.discriminators.parameters())
    assert all(p.requires_grad for p in trainer.discriminators.parameters())


def test_the_image_pool_fills_then_swaps_about_half_of_the_fakes_for_older_ones() -> None:
    pool = ImagePool(4)
    rng = np.random.default_rng(0)
    first = torch.arange(3.0).reshape(3, 1)
    assert torch.equal(pool.exchange(first, rng), first)  # filling: the fakes themselves
    judged = [pool.exchange(torch.full((2, 1), 10.0 + step), rng) for step in range(200)]
    assert len(pool.images) == 4
    older = sum(int((j < 10.0 + step).sum()) for step, j in enumerate(judged))
    assert 150 < older < 250  # each of the 400 fakes is swapped with probability 1/2
    assert all(bool((j <= 10.0 + step).all()) for step, j in enumerate(judged))  # never newer
    again = ImagePool(4)
    again.load(pool.state(), torch.device("cpu"))
    rngs = np.random.default_rng(1), np.random.default_rng(1)
    fakes = torch.full((2, 1), -1.0)
    assert torch.equal(pool.exchange(fakes, rngs[0]), again.exchange(fakes, rngs[1]))
    assert torch.equal(ImagePool(0).exchange(fakes, rng), fakes)


def test_a_resumed_run_ends_like_an_uninterrupted_one(preset: Path, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pool = "adversarial.pool_size=3"  # full after two steps: the resumed run swaps from it
    train(preset, overrides=[pool], run_dir=straight)
    train(preset, overrides=[pool, "train.steps=3"], run_dir=resumed)
    train(resume=resumed, overrides=["train.steps=6"])

    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6
    networks = ["model", "discriminators", *(["generator_ba"] if "cyclegan" in preset.name else [])]
    for network in networks:
        assert a[network].keys() == b[network].keys()
        for key, value in a[network].items():
            torch.testing.assert_close(b[network][key], value, rtol=1e-5, atol=1e-6)
    assert b["discriminator_optimizer"]["state"]
    assert a["image_pools"].keys() == b["image_pools"].keys()
    for domain, images in a["image_pools"].items():
        assert images.shape[0] == 3
        torch.testing.assert_close(b["image_pools"][domain], images, rtol=1e-5, atol=1e-6)


@pytest.mark.distributed
def test_two_process_cyclegan_with_accumulation_and_identity_loss(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    preset = tmp_path / "cyclegan.toml"
    preset.write_text(tiny_unet_toml(datasets["cyclegan-2d"], TINY, extends="cyclegan-2d"))
    run = tmp_path / "ddp"
    settings = ["train.steps=2", "data.batch_size=4", "train.accumulate=2"]
    settings += ["adversarial.identity_weight=5.0", "train.val_every=2", "adversarial.pool_size=6"]
    command = [sys.executable, "-m", "bioim2im", "train", str(preset), "--devices", "2"]
    command += ["--run-dir", str(run), *(arg for s in settings for arg in ("--set", s))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss/identity" in r] == [1, 2]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2


@pytest.mark.parametrize(
    ("base", "setting", "message"),
    [
        ("cyclegan-2d", "adversarial.conditional=true", "set adversarial.conditional = false"),
        ("cyclegan-2d", "adversarial.cycle=false", "needs [adversarial] with cycle = true"),
        ("cyclegan-2d", "model.heads.translated.task='semantic'", 'task = "regression"'),
        ("pix2pix-2d", "adversarial.discriminator.layers=4", "cannot judge patches"),
    ],
)
def test_settings_that_cannot_work_are_refused(
    cli, datasets: dict[str, Path], tmp_path: Path, base: str, setting: str, message: str
) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_text(tiny_unet_toml(datasets[base], TINY, extends=base))
    result = cli("train", preset, "--set", setting, "--run-dir", tmp_path / "run")
    assert result.code == 2, result.err
    assert message in result.err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("base", "setting", "message"),
    [
        ("cyclegan-2d", "adversarial.conditional=true", "set adversarial.conditional = false"),
        ("cyclegan-2d", "model.heads.translated.task='semantic'", 'task = "regression"'),
        (
            "cyclegan-2d",
            "model.heads.translated.out_channels=2;adversarial.identity_weight=1.0",
            "identity_weight needs as many output channels",
        ),
        ("pix2pix-2d", "model.heads.extra={name='conv', loss={name='mse'}}", "adversarial.head"),
    ],
)
def test_check_refuses_what_adversarial_training_would(
    cli, datasets: dict[str, Path], tmp_path: Path, base: str, setting: str, message: str
) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_text(tiny_unet_toml(datasets[base], TINY, extends=base))
    options = [part for text in setting.split(";") for part in ("--set", text)]
    result = cli("check", preset, *options)
    assert result.code == 2, result.err
    assert message in result.err
