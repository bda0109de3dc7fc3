"""Training: a preset -> a run directory (:func:`train`), and what a run validated on
(:func:`validation_images`)."""

from __future__ import annotations

import datetime
import hashlib
import json
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from bioim2im.api.options import Arg, Opt, Overrides, PythonOnly
from bioim2im.errors import Interrupted, UserError

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

    from bioim2im.config import Preset

RUN_MARKER = ".bioim2im-run"
"""The file that says a folder is a bioim2im run directory: training writes into a folder only
when it is new, empty, or holds this file (a run's, or the folder of a run that failed early)."""
RESULT_FILE = "result.json"
"""What a training run ended with, in its run directory (so a launcher of torchrun workers can
return it too)."""


@dataclass
class TrainResult:
    """How a training run ended."""

    run_dir: Path
    step: int
    """The optimizer step reached."""
    total_steps: int
    stop_reason: str | None
    """Why it stopped before ``total_steps`` (time budget, early stopping, a signal), or None."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The last validation's metrics (``val/loss``, ``val/<head>/<metric>``); empty without
    validation images."""
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per instance head, the postprocessing parameters tuned on the validation images."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "run_dir": str(self.run_dir)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        return cls(**{**data, "run_dir": Path(data["run_dir"])})

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.table import Table

        rows: dict[str, object] = {
            "run_dir": self.run_dir,
            "step": f"{self.step}/{self.total_steps}",
            "stopped": self.stop_reason,
            **self.metrics,
        }
        table = Table(title="trained", box=None, show_header=False)
        for key, value in rows.items():
            if value is not None:
                table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        yield table


@dataclass
class ValidationImage:
    """One validation image of a run: its input file and, per head, its target file."""

    name: str
    image: Path
    targets: dict[str, Path] = field(default_factory=dict)
    """Target files by head name; heads whose targets are not paired with inputs (unpaired
    data) have none."""


def validation_images(run_dir: str | Path) -> list[ValidationImage]:
    """The images a run validated on, found again from the preset saved in ``run_dir`` (its
    ``data.val_path``, the data's own split, or the seeded split ``split.json`` records).
    A run whose data layout does not serve image files (its ``image_pairs``) is refused."""
    from bioim2im.config import load_preset
    from bioim2im.data.layouts import dataset_layout
    from bioim2im.data.sources import DEFAULT_TARGET
    from bioim2im.plugin.manager import get_registry

    saved = Path(run_dir) / "preset.toml"
    if not saved.is_file():
        raise UserError(f"{run_dir}: not a bioim2im run directory (no preset.toml)")
    preset = load_preset(saved)
    registry = get_registry()
    try:
        splits = dataset_layout(preset, registry).image_pairs(preset, registry=registry)
    except UserError as exc:
        raise UserError(f"{run_dir}: {exc.message}", exc.problems) from None
    splits.ensure_usable()
    heads = preset.model.heads
    return [
        ValidationImage(
            pair.name,
            pair.image,
            {
                name: pair.targets[head.target or DEFAULT_TARGET]
                for name, head in heads.items()
                if (head.target or DEFAULT_TARGET) in pair.targets
            },
        )
        for pair in splits.val
    ]


def train(
    preset: Annotated[
        str | Path | None,
        Arg("A preset TOML file or a preset's name (not with --resume)."),
    ] = None,
    *,
    overrides: Overrides = (),
    run_dir: Annotated[
        str | Path | None,
        Opt("Where the run is written (default runs/<preset>-<time>).", ("--run-dir", "-o")),
    ] = None,
    resume: Annotated[
        str | Path | None, Opt("Continue the run in this directory from its last checkpoint.")
    ] = None,
    devices: Annotated[
        int | None, Opt("Train with N processes (GPUs) on this machine via torchrun.")
    ] = None,
    nnodes: Annotated[
        int | None,
        Opt(
            "Train on N machines together (run the same command on each, with the same "
            "--run-dir on a shared file system and --rdzv-endpoint): torchrun's c10d "
            "rendezvous; --devices processes per machine (default 1)."
        ),
    ] = None,
    rdzv_endpoint: Annotated[
        str | None,
        Opt(
            "HOST:PORT where the --nnodes machines meet (a free port on one of them).",
            ("--rdzv-endpoint",),
        ),
    ] = None,
    rdzv_id: Annotated[
        str | None,
        Opt(
            "A name of the job the --nnodes machines share (default: from --run-dir).",
            ("--rdzv-id",),
        ),
    ] = None,
    on_metrics: Annotated[Callable[[Mapping[str, Any]], None] | None, PythonOnly()] = None,
    should_stop: Annotated[Callable[[], bool] | None, PythonOnly()] = None,
) -> TrainResult:
    """Train a model from a preset; writes checkpoints, metrics and snapshots to a run directory.

    ``preset`` is a TOML file or the name of a shipped or plugin preset; ``run_dir`` defaults
    to ``runs/<preset>-<time>``.

    ``resume`` continues a killed run from ``RUN_DIR/checkpoints/last.pt`` with the preset saved
    in that run (``overrides`` may still change e.g. ``train.steps``). ``devices=N`` (N > 1)
    runs N processes under torchrun on this machine. ``nnodes=N`` (N > 1) trains on N machines
    together: the same call on each, with the same ``run_dir`` (on a file system they share)
    and ``rdzv_endpoint`` (``HOST:PORT`` where they meet, torchrun's c10d rendezvous), ``devices``
    processes on each (default 1); ``rdzv_id`` names the job (default: from ``run_dir``).

    ``on_metrics(record)`` is told each record ``metrics.jsonl`` gets (``step`` and the
    values); one that raises is reported once and left out. ``should_stop()`` is asked after
    every step: True stops training as Ctrl-C does (a checkpoint is written, the run may be
    resumed) but returns normally, with ``stop_reason`` ``"stop requested"`` (no tuning).
    Both need the training in this process (not ``devices`` > 1).
    """
    from bioim2im.config import load_preset as load
    from bioim2im.distributed import (
        Nodes,
        launched_by_torchrun,
        relaunch,
        restarted_by_torchrun,
        set_options,
    )

    if resume is not None:
        if preset is not None:
            raise UserError(
                f"give a preset or --resume {resume}, not both: a resumed run continues with "
                "the preset saved in its run directory (--set may still change it)"
            )
        if run_dir is not None and Path(run_dir).resolve() != Path(resume).resolve():
            raise UserError(
                f"--resume {resume} continues that run directory; --run-dir {run_dir} names another"
            )
        run_dir = Path(resume)
        saved = run_dir / "preset.toml"
        if not saved.is_file():
            raise UserError(f"--resume {run_dir}: not a bioim2im run directory (no preset.toml)")
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise UserError(f"--resume {run_dir}: no checkpoints/last.pt to continue from")
        preset = saved
    if devices is not None and devices < 1:
        raise UserError(f"--devices {devices}: give 1 or more")
    nodes = None
    if nnodes is not None or rdzv_endpoint is not None or rdzv_id is not None:
        if nnodes is None:
            raise UserError("--rdzv-endpoint and --rdzv-id go with --nnodes N (the machines)")
        if run_dir is None:
            raise UserError(
                "--nnodes: give --run-dir, the same folder (on a shared file system) on every node"
            )
        default_id = (
            "bioim2im-" + hashlib.sha256(str(Path(run_dir).absolute()).encode()).hexdigest()[:12]
        )
        nodes = Nodes.parse(nnodes, rdzv_endpoint, rdzv_id or default_id)
    if preset is None:
        raise UserError("give a preset file to train, or --resume RUN_DIR")
    resolved = load(preset, overrides)
    chosen = Path(run_dir) if run_dir is not None else _default_run_dir(Path(str(preset)))
    if chosen.exists() and not chosen.is_dir():
        raise UserError(f"--run-dir {chosen} is a file; give a folder for the run")
    _check_run_dir(chosen, resolved, preset if resume is None else None)

    several = (devices is not None and devices > 1) or nodes is not None
    if several and not launched_by_torchrun():
        if on_metrics is not None or should_stop is not None:
            raise UserError(
                "on_metrics and should_stop follow training in this process: leave out devices"
            )
        command = (
            ["train", "--resume", str(resume)] if resume is not None else ["train", str(preset)]
        )
        command += [*set_options(overrides), "--run-dir", str(chosen)]
        relaunch(devices or 1, command, "training", nodes)
        return TrainResult.from_json(json.loads((chosen / RESULT_FILE).read_text()))

    # torchrun restarts after a crash (--max-restarts) continue from the latest checkpoint.
    if (
        resume is None
        and restarted_by_torchrun()
        and (chosen / "checkpoints" / "last.pt").is_file()
    ):
        resume = chosen
    if resume is None and any((chosen / "checkpoints").glob("*.pt")):
        raise UserError(
            f"run directory {chosen} already holds a run; continue it with --resume {chosen} "
            "or choose another --run-dir"
        )
    if launched_by_torchrun() and run_dir is None:
        raise UserError(
            "under torchrun, give --run-dir so that every process writes to the same run"
        )
    return _train_in(
        resolved,
        chosen,
        resuming=resume is not None,
        on_metrics=on_metrics,
        should_stop=should_stop,
    )


def _check_run_dir(run_dir: Path, preset: Preset, preset_file: str | Path | None) -> None:
    """Refuse a run directory that is not new, empty or a bioim2im run (its files would be
    replaced), or that is, holds or lies inside what the training reads (``preset_file``: the
    preset trained, unless resuming; the data; the weights it starts from)."""
    from bioim2im.io.atomic import refuse_inputs

    given = Path(str(preset_file)) if preset_file is not None else None
    reads = [given if given is not None and given.is_file() else None]
    reads += [preset.data.path, preset.data.val_path, preset.train.init_from]
    refuse_inputs(run_dir, reads, "--run-dir")
    if not run_dir.is_dir() or (run_dir / RUN_MARKER).is_file():
        return
    if any((run_dir / "checkpoints").glob("*.pt")):
        return  # a run: continued with --resume, refused below otherwise
    if any(run_dir.iterdir()):
        raise UserError(
            f"--run-dir {run_dir} is not empty and is not a bioim2im run directory (no "
            f"{RUN_MARKER} in it); training would replace files there (preset.toml, "
            "metrics.jsonl, loss_curve.png): choose a new or empty folder"
        )


def _default_run_dir(preset_path: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{preset_path.stem}-{stamp}"


class _MetricsCallback:
    """``on_metrics`` as one more experiment tracker."""

    def __init__(self, callback: Callable[[Mapping[str, Any]], None]) -> None:
        self.callback = callback

    def log_metrics(self, step: int, values: Mapping[str, float]) -> None:
        self.callback({"step": step, **values})

    def log_image(self, step: int, name: str, image: Any) -> None:
        """Snapshots are not forwarded."""

    def close(self, status: str) -> None:
        """Nothing to close."""


def _train_in(
    preset: Preset,
    run_dir: Path,
    *,
    resuming: bool,
    on_metrics: Callable[[Mapping[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Datasets -> the training loop -> postprocessing tuned on the validation images -> the
    loss curve; every process trains, rank 0 writes."""
    from bioim2im.config import to_toml
    from bioim2im.data.datasets import training_datasets
    from bioim2im.distributed import distributed
    from bioim2im.io.atomic import remove_stale_partials, write_text
    from bioim2im.model.checkpoint import load_checkpoint
    from bioim2im.plugin.manager import get_registry
    from bioim2im.training.gan import GanTrainer
    from bioim2im.training.plots import save_loss_curve
    from bioim2im.training.report import read_metrics
    from bioim2im.training.tracking import Tracker
    from bioim2im.training.trainer import STOP_REQUESTED, Trainer
    from bioim2im.training.tuning import tune_postprocessing

    registry = get_registry()
    existing = set(run_dir.iterdir()) if run_dir.is_dir() else None
    tracker = Tracker()
    with distributed() as env:
        try:
            if env.is_main:
                run_dir.mkdir(parents=True, exist_ok=True)
                # First: the folder is a run from now on (its other files are bioim2im's).
                if not (run_dir / RUN_MARKER).is_file():
                    write_text(run_dir / RUN_MARKER, "a bioim2im run directory\n")
                # What a killed run left half-written (checkpoints, preset.toml) goes.
                for folder in (run_dir, run_dir / "checkpoints"):
                    remove_stale_partials(folder)
                if not resuming:
                    write_text(run_dir / "preset.toml", to_toml(preset))
            env.barrier()
            datasets = training_datasets(preset, run_dir, check=env.is_main, registry=registry)
            trainer_class = Trainer if preset.adversarial is None else GanTrainer
            trainer = trainer_class(preset, run_dir, env, registry, datasets)
            if resuming:
                trainer.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt"))
                if env.is_main:  # the preset it goes on with, --set changes included
                    write_text(run_dir / "preset.toml", to_toml(preset))
            if env.is_main:
                tracker = trainer.tracker = Tracker.open(preset, run_dir, registry, trainer.step)
                if on_metrics is not None:
                    tracker.loggers.append(("on_metrics", _MetricsCallback(on_metrics)))
            trainer.should_stop = should_stop
            outcome = trainer.fit()
        except BaseException:
            tracker.close("failed")
            if env.is_main:
                _remove_unstarted_run(run_dir, existing)
            raise
        tuning: dict[str, dict[str, Any]] = {}
        try:
            if env.is_main:
                if outcome.signal is None and outcome.stop_reason != STOP_REQUESTED:
                    tuning = tune_postprocessing(
                        run_dir, preset, datasets[1], registry, device=env.device, report=_say
                    )
                save_loss_curve(read_metrics(run_dir / "metrics.jsonl"), run_dir / "loss_curve.png")
            result = TrainResult(
                run_dir=run_dir,
                step=outcome.step,
                total_steps=outcome.total_steps,
                stop_reason=outcome.stop_reason,
                metrics=outcome.metrics,
                tuning=tuning,
            )
            if env.is_main:
                write_text(run_dir / RESULT_FILE, json.dumps(result.to_json(), indent=2) + "\n")
            # After the result: every node's launcher reads it once its processes end.
            env.barrier()
        except BaseException:
            tracker.close("failed")
            raise
        # Stopped early by a signal or the time budget: it may be resumed. Early stopping ends.
        resumable = outcome.step < outcome.total_steps and "early stopping" not in str(
            outcome.stop_reason
        )
        tracker.close("stopped" if resumable else "finished")
    if outcome.signal is not None:
        name = signal.Signals(outcome.signal).name
        raise Interrupted(
            f"training stopped by {name} at step {result.step} of {result.total_steps}; the "
            f"checkpoint is saved: continue with bioim2im train --resume {run_dir}",
            outcome.signal,
        )
    return result


def _remove_unstarted_run(run_dir: Path, existing: set[Path] | None) -> None:
    """Remove what this command put in ``run_dir`` (the folder too, if it made it) when
    training failed before it logged or saved anything: nothing there to continue or look at.
    ``existing`` is what the folder held before (None: it did not exist)."""
    import shutil

    from bioim2im.io.atomic import remove

    metrics = run_dir / "metrics.jsonl"
    logged = metrics.is_file() and metrics.stat().st_size > 0
    if logged or any((run_dir / "checkpoints").glob("*.pt")) or not run_dir.is_dir():
        return
    if existing is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for entry in set(run_dir.iterdir()) - existing:
        remove(entry)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
