"""Predict image files with a trained model: the engine of ``bioim2im predict``.

``bioim2im predict RUN_DIR|CHECKPOINT --input PATH|GLOB|FOLDER|MANIFEST.csv --output FOLDER``
predicts every input image block by block (sliding windows, memory bounded by the block size,
reading, predicting and writing overlapped) and writes, per input, one image per head after
that head's postprocessing (see :mod:`bioim2im.prediction.outputs` for the layout), plus
``predictions.csv``.

Safety. Every input is opened and checked against the model, and every output checked, before
anything is written: an input the model cannot take, or an existing output (without
``--overwrite``), stops the command with nothing written. Outputs are built in hidden work
directories and appear only when complete.

Resuming. Finished blocks are recorded in the work directory; running the same command again
after an interruption (same checkpoint, settings and inputs) skips them, and takes the inputs
it had finished as done. A work directory left by other settings is refused unless
``--overwrite`` discards it.

Several processes. Under torchrun (or with ``devices=N``, which relaunches the command under
torchrun on this machine), the processes split each image's blocks, whose borders lie on
output chunk borders so that no two processes write the same chunk; after a barrier, rank 0
runs the neighbourhood postprocessing (label stitching) and publishes. The result is the one a
single process writes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bioim2im.errors import UserError
from bioim2im.formats import load_model
from bioim2im.formats.trained_model import TrainedModel, mismatch
from bioim2im.io.atomic import output_lock
from bioim2im.io.base import InMemoryImage, LazyImage
from bioim2im.io.images import InputImage
from bioim2im.prediction import parts
from bioim2im.prediction.command import Command
from bioim2im.prediction.display import BlockReporter
from bioim2im.prediction.image import (
    file_tiling,
    finish_image,
    image_specs,
    predict_image,
    share_one_heap,
    whole_tiling,
)
from bioim2im.prediction.outputs import (
    MemoryStore,
)
from bioim2im.prediction.summary import InputResult, PredictionSummary

__all__ = ["InputResult", "PredictionSummary", "predict_files", "predict_in_memory"]


def predict_in_memory(
    model: TrainedModel,
    image: np.ndarray | LazyImage,
    *,
    axes: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Predict one image into arrays in memory; each head's postprocessed output.

    An array is predicted as one block, so neighbourhood postprocessing (labelling) sees it
    whole; a lazy image (a file opened with :func:`~bioim2im.io.open_image`) is read block by
    block like a file. ``axes`` name an array's axes (default: guessed from its shape).
    ``on_progress(done, total)`` is told each finished block (of the time point being
    predicted); an exception it raises stops the prediction and is raised here.
    """
    if isinstance(image, np.ndarray):
        lazy: LazyImage = InMemoryImage(image, axes=axes)
    elif axes is not None:
        raise UserError("axes= names the axes of an array; a lazy image carries its own")
    else:
        lazy = image
    found = InputImage(Path(lazy.path), "image", lazy)
    problem = mismatch(found, model)
    if problem:
        raise UserError(problem)
    tiling = (
        whole_tiling(model, found) if isinstance(image, np.ndarray) else file_tiling(model, found)
    )
    store = MemoryStore(image_specs(model, found, tiling))
    report = None if on_progress is None else (lambda blocks, voxels: on_progress)
    predict_image(model, found, store, tiling, report=report)
    finish_image(model, found, store, tiling)
    return store.arrays


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
    cluster: str | None = None,
) -> PredictionSummary:
    """Predict image files into ``output``; see the module docstring.

    ``format`` (``ome-zarr`` or ``tiff``) overrides ``predict.format``; ``overwrite`` replaces
    existing outputs and discards unfinished ones of other settings; ``devices=N`` (N > 1) runs
    N processes under torchrun; ``progress`` shows a progress bar (plain lines when stderr is
    not a terminal). ``split`` chooses the rows of a CSV manifest with a split column (default
    ``test``; ``all`` for every row). ``part="K/N"`` predicts the K-th of N shares of every
    image, and ``finalize`` finishes what the parts predicted (see
    :mod:`bioim2im.prediction.parts`). ``on_progress(done, total)`` is told each finished
    block of the image being predicted (this process's blocks); an exception it raises stops
    the prediction, which the same call continues later. ``trust_model`` runs a TorchScript
    graph from elsewhere even when it holds more than tensor operations (see
    :mod:`bioim2im.formats.graphs.allowlist`). ``cluster`` (an address, ``local[:N]``,
    ``slurm``, ``lsf`` or ``pbs``) predicts on a Dask cluster
    (:mod:`bioim2im.prediction.cluster`).
    """
    from bioim2im.distributed import (
        broadcast_object,
        distributed,
        launched_by_torchrun,
        relaunch,
        set_options,
    )

    started = time.monotonic()
    inputs, output = str(inputs), Path(output)
    share_one_heap()
    if cluster is not None:
        return _on_cluster(
            model, inputs, output, overrides, format, overwrite, devices, progress, split, part,
            finalize, on_progress, trust_model, cluster,
        )  # fmt: skip
    if part is not None or finalize:
        return _parts(
            model,
            inputs,
            output,
            overrides,
            format,
            overwrite,
            devices,
            progress,
            part,
            split,
            finalize,
            on_progress,
            trust_model,
        )
    if devices is not None and devices > 1 and not launched_by_torchrun():
        if on_progress is not None:
            raise UserError("on_progress reports this process's blocks: leave out devices")
        # Check everything here first: a mistake is reported once, before any worker starts.
        job = Command.plan(
            load_model(model, overrides, trust_model=trust_model),
            inputs,
            output,
            format,
            split,
            given_model=model,
        )
        decisions = job.decide(overwrite)
        command = ["predict", str(model), "--input", inputs, "--output", str(output)]
        command += set_options(overrides)
        command += ["--split", split] if split is not None else []
        command += ["--format", format] if format is not None else []
        command += ["--overwrite"] if overwrite else []
        command += ["--trust-model"] if trust_model else []
        relaunch(devices, command, "prediction")
        results = [job.result(found, decisions[found.stem] == "done") for found in job.images]
        return job.summary(results, time.monotonic() - started, quiet=True)
    with distributed() as env, contextlib.ExitStack() as held:
        say = _say if progress and env.is_main else None
        job = Command.plan(
            load_model(model, overrides, env.device, trust_model=trust_model),
            inputs,
            output,
            format,
            split,
            say,
            model,
        )
        # Rank 0 takes the output folder (one command writes there at a time) and decides what
        # to do with existing outputs; every rank follows, or fails alike.
        decision: tuple[str, Any] = ("ok", None)
        if env.is_main:
            try:
                held.enter_context(output_lock(output))
                decision = ("ok", job.decide(overwrite))
            except UserError as exc:
                decision = ("error", (exc.message, exc.problems))
        decision = broadcast_object(decision, env)  # type: ignore[assignment]
        if decision[0] == "error":
            raise UserError(*decision[1])
        reporter = BlockReporter(enabled=progress and env.is_main, listener=on_progress)
        results = job.run(decision[1], env, reporter)
        return job.summary(results, time.monotonic() - started, quiet=not env.is_main)


def _parts(
    model: str | Path,
    inputs: str,
    output: Path,
    overrides: Sequence[str],
    format: str | None,
    overwrite: bool,
    devices: int | None,
    progress: bool,
    part: str | None,
    split: str | None,
    finalize: bool,
    on_progress: Callable[[int, int], None] | None = None,
    trust_model: bool = False,
) -> PredictionSummary:
    """``--part K/N`` or ``--finalize``: one independent part, or the finishing step."""
    from bioim2im.distributed import launched_by_torchrun

    started = time.monotonic()
    if part is not None and ((devices is not None and devices > 1) or launched_by_torchrun()):
        raise UserError("--part runs one process per part: leave out --devices and torchrun")
    share = parts.share(part, finalize)
    job = Command.plan(
        load_model(model, overrides, trust_model=trust_model),
        inputs,
        output,
        format,
        split,
        given_model=model,
    )
    if share is None:
        results = parts.finalize(job)
    else:
        reporter = BlockReporter(enabled=progress, listener=on_progress)
        results = parts.predict_part(job, share, overwrite=overwrite, reporter=reporter)
    summary = job.summary(results, time.monotonic() - started, quiet=False)
    summary.part = part
    return summary


def _on_cluster(
    model: str | Path,
    inputs: str,
    output: Path,
    overrides: Sequence[str],
    format: str | None,
    overwrite: bool,
    devices: int | None,
    progress: bool,
    split: str | None,
    part: str | None,
    finalize: bool,
    on_progress: Callable[[int, int], None] | None,
    trust_model: bool,
    cluster: str,
) -> PredictionSummary:
    """``--cluster``: the block plan as Dask tasks (see :mod:`bioim2im.prediction.cluster`)."""
    from bioim2im.distributed import launched_by_torchrun
    from bioim2im.prediction import cluster as on_cluster

    started = time.monotonic()
    if part is not None or finalize or (devices is not None and devices > 1):
        raise UserError(
            "--cluster spreads the blocks over the cluster's workers: leave out --devices, "
            "--part and --finalize"
        )
    if launched_by_torchrun():
        raise UserError("--cluster runs its own workers: do not start it under torchrun")
    where = on_cluster.check_where(cluster)
    model_overrides, settings = on_cluster.split_overrides(overrides)
    say = _say if progress else None
    loaded = load_model(model, model_overrides, trust_model=trust_model)
    job = Command.plan(loaded, inputs, output, format, split, say, model)
    given = str(model)
    source = on_cluster.ModelSource(
        given if "://" in given else str(Path(given).resolve()),
        tuple(model_overrides),
        trust_model,
        loaded.fingerprint,
    )
    reporter = BlockReporter(enabled=progress, listener=on_progress)
    results = on_cluster.predict_on_cluster(
        job, where, settings, source, overwrite=overwrite, reporter=reporter, say=say
    )
    return job.summary(results, time.monotonic() - started, quiet=False)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
