"""The machine a plan is for: its CPU cores or GPU, and how long a training step takes on it."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bioim2im.errors import UserError
from bioim2im.planning.rules import Machine

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.plugin.registry import ComponentRegistry

MEASURED_STEPS = 5
"""Optimizer steps timed (after one warm-up step)."""
MOST_SECONDS = 20.0
"""Time spent timing steps at most (fewer steps on a slow machine)."""


def this_machine(device: str = "auto") -> Machine:
    """The CPU cores this process may use, or the GPU (``device`` "auto", "cpu" or "cuda")."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device!r}: choose auto, cpu or cuda")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda: no CUDA GPU is visible here; plan on the machine that will train "
            "(steps and batch sizes are measured on it)"
        )
    if device == "cpu" or not torch.cuda.is_available():
        return Machine("cpu", cores or 1, name=f"{cores} CPU cores")
    properties = torch.cuda.get_device_properties(0)
    return Machine("cuda", cores or 1, properties.total_memory / 1e9, properties.name)


def seconds_per_step(preset: Preset, registry: ComponentRegistry, machine: Machine) -> float:
    """How long one optimizer step of ``preset`` takes here: a few real steps (its data, network,
    loss and optimizer), timed after a warm-up step, data loading included; the fastest of them
    (the one least slowed by other work on the machine)."""
    from bioim2im.data.datasets import training_datasets
    from bioim2im.data.loader import make_loader
    from bioim2im.distributed import distributed
    from bioim2im.training.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="bioim2im-plan-") as folder:
        run_dir = Path(folder)
        datasets = training_datasets(preset, run_dir, check=False, registry=registry)
        with distributed(machine.device) as env:
            trainer = Trainer(preset, run_dir, env, registry, datasets)
            loader = make_loader(
                datasets[0],
                batch_size=trainer.micro_batch,
                num_workers=0,
                seed=preset.train.seed,
            )
            batches = iter(loader)
            trainer.train_step(batches)
            times: list[float] = []
            started = time.perf_counter()
            while len(times) < MEASURED_STEPS and time.perf_counter() - started < MOST_SECONDS:
                begin = time.perf_counter()
                trainer.train_step(batches)
                if machine.device == "cuda":
                    import torch

                    torch.cuda.synchronize()
                times.append(time.perf_counter() - begin)
    return min(times)
