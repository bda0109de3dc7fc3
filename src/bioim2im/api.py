"""The Python API, the one door the command line also goes through.

- :func:`train`: a preset -> a run directory with checkpoints; returns a :class:`TrainResult`.
- :func:`predict`: an image in memory (or any lazy image) -> each head's output array.
- :func:`predict_files`: image files of any size -> prediction files; a
  :class:`~bioim2im.prediction.job.PredictionSummary`.
- :func:`evaluate`: predictions against ground truth; an
  :class:`~bioim2im.evaluation.EvaluationReport`.
- :func:`export`: a run as a bioimage.io package, a TorchScript or an ONNX file; an
  :class:`~bioim2im.export.ExportResult`.
- :func:`load_preset`: read, resolve and validate a preset; :func:`list_presets`: the presets
  that can be named.
- :func:`validation_images`: the validation images of a run directory, with their targets.

Front ends (a GUI, a notebook) follow and stop the long calls through keyword-only callbacks:
``on_progress`` (blocks predicted), ``on_metrics`` (each logged training record) and
``should_stop`` (asked after every training step); they run in the calling process only.

Every mistake of the caller's (a bad preset value, a missing file) is raised as a
:class:`UserError` whose text is the one message the command line prints.

The model a prediction uses is named ``model`` everywhere: a run directory (its best checkpoint),
a checkpoint file, or an exported model (a bioimage.io package, an ONNX or TorchScript file). Options are keyword-only. Heavy libraries are imported by the functions
that need them, so ``import bioim2im`` stays light.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.errors import Interrupted, UserError
from bioim2im.io.atomic import remove, remove_stale_partials

if TYPE_CHECKING:
    import numpy as np

    from bioim2im.config import Preset
    from bioim2im.evaluation import EvaluationReport
    from bioim2im.export import ExportResult
    from bioim2im.io.base import LazyImage
    from bioim2im.prediction.job import PredictionSummary

__all__ = [
    "TrainResult",
    "UserError",
    "ValidationImage",
    "evaluate",
    "export",
    "list_presets",
    "load_preset",
    "predict",
    "predict_files",
    "train",
    "validation_images",
]

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


def load_preset(preset: str | Path, *, overrides: Sequence[str] = ()) -> Preset:
    """Read, resolve (``extends``, then ``overrides`` such as ``"train.steps=500"``) and
    validate a preset; a :class:`~bioim2im.errors.UserError` lists every problem."""
    from bioim2im.config import load_preset as load

    return load(preset, overrides)


def list_presets() -> list[dict[str, str]]:
    """Every preset that can be named (shipped and from installed plugins), as ``bioim2im
    presets`` lists them: ``name``, ``description``, ``package``, ``version`` and ``path``."""
    from bioim2im.config.reference import preset_rows
    from bioim2im.plugin.manager import get_registry

    return preset_rows(get_registry())


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
    CellMap runs validate on crops, not images: refused."""
    from bioim2im.data.sources import DEFAULT_TARGET, find_splits, reader_suffixes
    from bioim2im.plugin.manager import get_registry

    saved = Path(run_dir) / "preset.toml"
    if not saved.is_file():
        raise UserError(f"{run_dir}: not a bioim2im run directory (no preset.toml)")
    preset = load_preset(saved)
    if preset.data.layout == "cellmap":
        raise UserError(f"{run_dir}: a CellMap run validates on crops, not on image files")
    splits = find_splits(
        preset.data,
        preset.model.heads,
        seed=preset.train.seed,
        suffixes=reader_suffixes(get_registry()),
    )
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
    preset: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    devices: int | None = None,
    on_metrics: Callable[[Mapping[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a model from ``preset`` (a TOML file, or the name of a shipped or plugin preset)
    into ``run_dir`` (default ``runs/<preset>-<time>``).

    ``resume`` continues a killed run from ``RUN_DIR/checkpoints/last.pt`` with the preset saved
    in that run (``overrides`` may still change e.g. ``train.steps``). ``devices=N`` (N > 1)
    runs N processes under torchrun on this machine.

    ``on_metrics(record)`` is told each record ``metrics.jsonl`` gets (``step`` and the
    values); one that raises is reported once and left out. ``should_stop()`` is asked after
    every step: True stops training as Ctrl-C does (a checkpoint is written, the run may be
    resumed) but returns normally, with ``stop_reason`` ``"stop requested"`` (no tuning).
    Both need the training in this process (not ``devices`` > 1).
    """
    from bioim2im.config import load_preset as load
    from bioim2im.distributed import (
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
    if preset is None:
        raise UserError("give a preset file to train, or --resume RUN_DIR")
    resolved = load(preset, overrides)
    chosen = Path(run_dir) if run_dir is not None else _default_run_dir(Path(str(preset)))
    if chosen.exists() and not chosen.is_dir():
        raise UserError(f"--run-dir {chosen} is a file; give a folder for the run")
    _check_run_dir(chosen, resolved, preset if resume is None else None)

    if devices is not None and devices > 1 and not launched_by_torchrun():
        if on_metrics is not None or should_stop is not None:
            raise UserError(
                "on_metrics and should_stop follow training in this process: leave out devices"
            )
        command = (
            ["train", "--resume", str(resume)] if resume is not None else ["train", str(preset)]
        )
        command += [*set_options(overrides), "--run-dir", str(chosen)]
        relaunch(devices, command, "training")
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
    from bioim2im.io.atomic import write_text
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
            env.barrier()
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


def predict(
    model: str | Path,
    image: np.ndarray | LazyImage,
    *,
    axes: str | None = None,
    overrides: Sequence[str] = (),
    device: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    trust_model: bool = False,
) -> dict[str, np.ndarray]:
    """Predict one image and return each head's postprocessed output.

    ``image`` is an array, or any lazy image (e.g. ``bioim2im.io.open_image(path)``), which is
    read block by block. ``axes`` name an array's axes (letters of ``TCZYX``; default: guessed
    from its shape as for files). Each output is shaped ``(T, C, Z, Y, X)`` without the axes
    the input lacks (C is always there), in the head's output dtype. ``device`` defaults to the
    GPU when there is one. ``on_progress(done, total)`` is told each block predicted (an array
    is one block; a lazy image is read in several); an exception it raises stops the
    prediction and is raised here. ``model`` may be a run, a checkpoint, a model file or
    package, or its ``https://`` URL; ``trust_model`` runs a TorchScript graph from elsewhere
    that holds more than tensor operations (see the README's security model).
    """
    from bioim2im.prediction.job import predict_in_memory
    from bioim2im.prediction.trained_model import load_model

    chosen = device or _default_device()
    return predict_in_memory(
        load_model(model, overrides, chosen, trust_model=trust_model),
        image,
        axes=axes,
        on_progress=on_progress,
    )


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def predict_files(
    model: str | Path,
    inputs: str | Path,
    output: str | Path,
    *,
    overrides: Sequence[str] = (),
    format: str | None = None,
    overwrite: bool = False,
    devices: int | None = None,
    progress: bool = True,
    split: str | None = None,
    part: str | None = None,
    finalize: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    trust_model: bool = False,
) -> PredictionSummary:
    """Predict image files (one image, a glob, a folder or a CSV manifest) into ``output``.

    Memory depends on the block size, not on the image size; a killed run resumes where it
    stopped when the same call is made again. ``format`` (``ome-zarr`` or ``tiff``) overrides
    ``predict.format``; ``overwrite`` replaces existing outputs; ``devices=N`` (N > 1) runs N
    processes under torchrun; ``progress`` shows a progress bar (plain lines when stderr is not
    a terminal). A CSV manifest with a split column (``data.split_column``) stands for its
    ``test`` rows unless ``split`` names others (``train``, ``val``, or ``all`` rows).
    ``part="K/N"`` predicts one of N independent shares (cluster jobs without torchrun) and
    ``finalize`` publishes what the parts predicted. ``on_progress(done, total)`` is told each
    block of the image being predicted; an exception it raises stops the prediction (the same
    call later continues it) and is raised here. ``trust_model`` runs a TorchScript graph
    from elsewhere that holds more than tensor operations (see the README's security model).
    """
    from bioim2im.prediction.job import predict_files as run

    return run(
        model, inputs, output, overrides=overrides, format=format, overwrite=overwrite,
        devices=devices, progress=progress, split=split, part=part, finalize=finalize,
        on_progress=on_progress,
        trust_model=trust_model,
    )  # fmt: skip


def evaluate(
    pred: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    *,
    task: str = "auto",
    head: str | None = None,
    classes: Sequence[int] | None = None,
    voxel_size: float | Sequence[float] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    csv_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> EvaluationReport:
    """Score predictions against ground truth, image by image (see :mod:`bioim2im.evaluation`
    for pairing and the automatic choice of ``task``); optionally write JSON and CSV (an
    existing report file is replaced only with ``overwrite``, and never ``pred`` or ``truth``)."""
    from bioim2im.evaluation import evaluate as run

    return run(
        pred, truth, task=task, head=head, classes=classes, voxel_size=voxel_size,
        json_path=json_path, csv_path=csv_path, overwrite=overwrite,
    )  # fmt: skip


def export(
    model: str | Path,
    format: str,
    *,
    output: str | Path | None = None,
    heads: Sequence[str] = (),
    folder: bool = False,
    overrides: Sequence[str] = (),
    test_image: str | Path | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export a run directory (its best checkpoint) or a checkpoint as ``format``:
    ``bioimageio`` (a model package, a zip or with ``folder`` a folder, tested with
    bioimageio.core before it is written), ``torchscript`` or ``onnx`` (one graph, one output
    per head, checked against the network). ``heads`` picks heads (default all);
    ``overrides`` change the preset (e.g. ``export.license=MIT``); ``test_image`` is the image
    the package's test tensors are cut from (default: one of the run's validation images).
    Nothing is written unless every check passes."""
    from bioim2im.export import export_model

    return export_model(
        model, format, output=output, heads=heads, folder=folder, overrides=overrides,
        test_image=test_image, overwrite=overwrite,
    )  # fmt: skip
