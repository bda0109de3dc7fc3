"""Training end to end on tiny synthetic data: learning, run directory, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bioim2im.api import train
from bioim2im.model.checkpoint import load_checkpoint


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_model_learns_and_the_run_directory_is_complete(tiny_preset, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(tiny_preset(), overrides=["train.steps=80", "train.val_every=40"], run_dir=run)
    assert result.step == 80

    records = _records(run)
    losses = [r["loss"] for r in records if "loss" in r]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2])
    vals = [r for r in records if "val/seg/dice" in r]
    assert [r["step"] for r in vals] == [40, 80]
    # A trivial all-foreground prediction scores 2f/(1+f) on the validation patches.
    assert vals[-1]["val/seg/dice"] > 0.75

    assert all("step" in r for r in records)
    for name in (
        "preset.toml",
        "metrics.jsonl",
        "loss_curve.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "snapshots").glob("*.png")) == [
        "step_0000040.png",
        "step_0000080.png",
    ]

    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 80
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "preset", "versions"} <= set(state)
    assert state["versions"]["bioim2im"]
    assert 'name = "unet"' in state["preset"]
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["best"] == max(r["val/seg/dice"] for r in vals)


def test_same_seed_same_loss_curve(tiny_preset, tmp_path: Path) -> None:
    curves = []
    for name in ("a", "b"):
        train(tiny_preset(), overrides=["train.steps=15"], run_dir=tmp_path / name)
        curves.append([r["loss"] for r in _records(tmp_path / name) if "loss" in r])
    assert curves[0] == curves[1]
    other = tmp_path / "c"
    train(tiny_preset(), overrides=["train.steps=15", "train.seed=4"], run_dir=other)
    assert [r["loss"] for r in _records(other) if "loss" in r] != curves[0]


def test_existing_run_directory_is_refused(tiny_preset, tmp_path: Path, cli) -> None:
    run = tmp_path / "run"
    train(tiny_preset(), overrides=["train.steps=2"], run_dir=run)
    result = cli("train", tiny_preset(), "--run-dir", run)
    assert result.code == 2
    assert f"--resume {run}" in result.err


def test_accumulation_and_clipping_and_ema_train(tiny_preset, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(
        tiny_preset(),
        overrides=[
            "train.steps=6",
            "train.accumulate=2",
            "train.clip_grad_norm=1.0",
            "train.ema=0.9",
            "train.val_every=6",
        ],
        run_dir=run,
    )
    assert result.step == 6
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["ema"] is not None


def test_batch_not_divisible_by_accumulation_is_a_clear_error(
    tiny_preset, tmp_path: Path, cli
) -> None:
    result = cli("train", tiny_preset(), "--set", "train.accumulate=3", "--run-dir", tmp_path / "r")
    assert result.code == 2
    assert "data.batch_size 4 must be divisible" in result.err


def test_fine_tuning_loads_matching_layers_and_freezes(tiny_preset, tmp_path: Path) -> None:
    first = tmp_path / "first"
    train(tiny_preset(), overrides=["train.steps=3"], run_dir=first)
    second = tmp_path / "second"
    train(
        tiny_preset(),
        overrides=[
            f"train.init_from={first}",
            "train.steps=3",
            "train.freeze=['backbone.*']",
            "model.heads.seg.out_channels=2",
            "model.heads.seg.loss={name='dice_ce', sigmoid=false, softmax=true, to_onehot_y=true}",
            "model.heads.seg.postprocess=[{name='softmax'}, {name='argmax'}]",
        ],
        run_dir=second,
    )
    a = load_checkpoint(first / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(second / "checkpoints" / "last.pt")["model"]
    backbone = [k for k in a if k.startswith("backbone.")]
    assert backbone and all(torch.equal(a[k], b[k]) for k in backbone)  # loaded, then frozen
    assert b["heads.seg.conv.weight"].shape[0] == 2 if "heads.seg.conv.weight" in b else True


def test_nan_loss_stops_with_a_message_naming_the_step(tiny_preset, tmp_path: Path, cli) -> None:
    result = cli(
        "train",
        tiny_preset(),
        "--set",
        "train.optimizer={name='sgd', lr=1e12}",
        "--set",
        "model.heads.seg.loss={name='mse'}",
        "--set",
        "train.steps=200",
        "--run-dir",
        tmp_path / "r",
    )
    assert result.code == 1, result.err
    assert "the loss became" in result.err and "at step" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_amp_settings_run_on_cpu(tiny_preset, tmp_path: Path, amp: str) -> None:
    assert (
        train(
            tiny_preset(), overrides=["train.steps=2", f"train.amp={amp}"], run_dir=tmp_path / amp
        ).step
        == 2
    )


# torch.compile imports torch.utils.mkldnn, which warns about its own use of torch.jit.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("option", ["train.channels_last=true", "train.compile=true"])
def test_channels_last_and_compile_train_the_same_model(
    tiny_preset, tmp_path: Path, option: str
) -> None:
    settings = ["train.steps=4", "train.log_every=1", "train.val_every=4"]
    train(tiny_preset(), overrides=settings, run_dir=tmp_path / "eager")
    train(tiny_preset(), overrides=[*settings, option], run_dir=tmp_path / "other")
    curves = [
        [r["loss"] for r in _records(tmp_path / n) if "loss" in r] for n in ("eager", "other")
    ]
    assert len(curves[1]) == 4
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-3)
    # The checkpoint holds the plain model (no torch.compile wrapper names): predict loads it.
    eager, other = (
        load_checkpoint(tmp_path / n / "checkpoints" / "last.pt") for n in ("eager", "other")
    )
    assert other["model"].keys() == eager["model"].keys()


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_network_the_compiler_fails_on_trains_eagerly_after_one_warning(
    tiny_preset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch 2.13's Inductor fails on labelfree-3d's network for training; here a compiler
    backend that always fails stands in for it (the real one takes a minute to fail)."""

    def failing_backend(graph: torch.fx.GraphModule, inputs: list) -> None:
        raise RuntimeError("Invalid ranges [0:-1]")

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **k: compile_(m, backend=failing_backend))
    settings = ["train.steps=3", "train.log_every=1", "train.val_every=3"]
    train(tiny_preset(), overrides=settings, run_dir=tmp_path / "eager")
    with pytest.warns(RuntimeWarning, match="train.compile: torch.compile failed.*Invalid ranges"):
        outcome = train(
            tiny_preset(), overrides=[*settings, "train.compile=true"], run_dir=tmp_path / "other"
        )
    assert outcome.step == 3
    curves = [
        [r["loss"] for r in _records(tmp_path / n) if "loss" in r] for n in ("eager", "other")
    ]
    assert curves[1] == curves[0]  # the same steps, eagerly, bit for bit


def test_a_warm_up_longer_than_a_quick_run_is_shortened_and_said(
    tiny_preset, tmp_path: Path, cli
) -> None:
    result = cli(
        "train", tiny_preset(), "--run-dir", tmp_path / "run",
        "--set", "train.steps=20",
        "--set", "train.scheduler={name = 'cosine', warmup_steps = 100}",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "warmup_steps = 100 is not below the 20 training steps" in result.err
    assert "first 2 instead" in result.err


def test_init_from_says_what_it_loaded_and_refuses_another_network(
    tiny_preset, tmp_path: Path, cli
) -> None:
    first = tmp_path / "first"
    train(tiny_preset(), overrides=["train.steps=2"], run_dir=first)
    # The same network with another head: most weights fit; the report names what did not.
    fine = cli(
        "train", tiny_preset(), "--run-dir", tmp_path / "fine",
        "--set", f"train.init_from={first}", "--set", "train.steps=2",
        "--set", "model.heads.seg.out_channels=2",
        "--set", "model.heads.seg.loss={name='dice_ce', sigmoid=false, softmax=true, to_onehot_y=true}",
        "--set", "model.heads.seg.postprocess=[{name='softmax'}, {name='argmax'}]",
    )  # fmt: skip
    assert fine.code == 0, fine.err
    assert f"train.init_from {first / 'checkpoints' / 'best.pt'}: loaded" in fine.err
    assert "loaded 14 of the model's 16 tensors (99.8% of its weights)" in fine.err
    assert "heads.seg.0.conv.weight (shape [1, 8, 1, 1] in the checkpoint, [2, 8, 1, 1] here)" in (
        fine.err
    )
    # Another architecture: too little fits -> refused, unless partial loading is asked for.
    other = ["--set", "model.backbone.channels=[16, 32, 64]", "--set", "model.features=16"]
    refused = cli(
        "train", tiny_preset(), "--run-dir", tmp_path / "other",
        "--set", f"train.init_from={first}", *other,
    )  # fmt: skip
    assert refused.code == 2
    assert "fits; is it a checkpoint of another network?" in refused.err
    assert "train.init_partial = true" in refused.err and "Traceback" not in refused.err
    assert not (tmp_path / "other" / "checkpoints").exists()
    partial = cli(
        "train", tiny_preset(), "--run-dir", tmp_path / "partial",
        "--set", f"train.init_from={first}", "--set", "train.init_partial=true",
        "--set", "train.steps=2", *other,
    )  # fmt: skip
    assert partial.code == 0, partial.err
    assert "loaded" in partial.err


def test_init_from_a_checkpoint_where_nothing_fits_is_refused_even_when_partial(
    tiny_preset, tmp_path: Path, cli
) -> None:
    from bioim2im.model.checkpoint import save_checkpoint

    foreign = tmp_path / "foreign.pt"
    save_checkpoint({"model": {"encoder.weight": torch.zeros(3, 3)}, "preset": ""}, foreign)
    result = cli(
        "train", tiny_preset(), "--run-dir", tmp_path / "run",
        "--set", f"train.init_from={foreign}", "--set", "train.init_partial=true",
    )  # fmt: skip
    assert result.code == 2
    assert "loaded 0 of the model's" in result.err and "nothing fits" in result.err
