"""The Python API the CLI calls: train(), predict(), evaluate(), load_preset()."""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bioim2im.config import Preset, load_preset, to_toml
from bioim2im.errors import UserError

__all__ = ["load_preset", "train"]


def _default_run_dir(preset_path: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{preset_path.stem}-{stamp}"


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def train(
    preset: str | Path | None = None,
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    devices: int | None = None,
) -> dict[str, Any]:
    """Train a model. Returns the final step, the stop reason and the last validation metrics.

    ``resume`` continues a killed run from ``RUN_DIR/checkpoints/last.pt`` with the preset saved
    in that run. ``devices=N`` (N > 1) relaunches this command under torchrun on one node.
    """
    from bioim2im.engine.distributed import launched_by_torchrun, restarted_by_torchrun

    if resume is not None:
        run_dir = Path(resume)
        saved = run_dir / "preset.toml"
        if not saved.is_file():
            raise UserError(f"--resume {run_dir}: not a bioim2im run directory (no preset.toml)")
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise UserError(f"--resume {run_dir}: no checkpoints/last.pt to continue from")
        preset = saved
    if preset is None:
        raise UserError("give a preset file to train, or --resume RUN_DIR")
    preset_path = Path(preset)
    resolved = load_preset(preset_path, overrides)
    chosen = Path(run_dir) if run_dir is not None else _default_run_dir(preset_path)

    if devices is not None and devices > 1 and not launched_by_torchrun():
        return _relaunch_under_torchrun(devices, preset_path, overrides, chosen, resume)

    # torchrun restarts after a crash (--max-restarts) continue from the latest checkpoint.
    if (
        resume is None
        and restarted_by_torchrun()
        and (chosen / "checkpoints" / "last.pt").is_file()
    ):
        resume = chosen
    if resume is None and (chosen / "checkpoints").exists():
        raise UserError(
            f"run directory {chosen} already holds a run; continue it with --resume {chosen} "
            "or choose another --run-dir"
        )
    if launched_by_torchrun() and run_dir is None:
        raise UserError(
            "under torchrun, give --run-dir so that every process writes to the same run"
        )
    return _train_in(resolved, chosen, resume is not None)


def _train_in(preset: Preset, run_dir: Path, resuming: bool) -> dict[str, Any]:
    from bioim2im.engine.checkpoint import load_checkpoint
    from bioim2im.engine.distributed import distributed
    from bioim2im.engine.gan import GanTrainer
    from bioim2im.engine.trainer import Trainer
    from bioim2im.plugins import get_registry

    registry = get_registry()
    with distributed() as env:
        if env.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(run_dir / "preset.toml", to_toml(preset))
        env.barrier()
        datasets = build_datasets(preset, run_dir, check=env.is_main)
        trainer_class = Trainer if preset.adversarial is None else GanTrainer
        trainer = trainer_class(preset, run_dir, env, registry, datasets)
        if resuming:
            trainer.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt"))
        return trainer.fit()


def build_datasets(preset: Preset, run_dir: Path, check: bool = True) -> tuple[Any, Any]:
    """Training and validation datasets of a preset, after the same checks as `check --data`."""
    from bioim2im.data.pipeline import training_datasets

    return training_datasets(preset, run_dir, check=check)


def _relaunch_under_torchrun(
    devices: int,
    preset_path: Path,
    overrides: Sequence[str],
    run_dir: Path,
    resume: str | Path | None,
) -> dict[str, Any]:
    import subprocess

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={devices}",
        "-m",
        "bioim2im",
        "train",
    ]
    command += ["--resume", str(resume)] if resume is not None else [str(preset_path)]
    for text in overrides:
        command += ["--set", text]
    command += ["--run-dir", str(run_dir)]
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise UserError(
            f"training under torchrun with {devices} processes failed (exit {completed.returncode})"
        )
    return {"run_dir": str(run_dir)}
