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
import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bioim2im.errors import EnvironmentFailure, UserError
from bioim2im.io.atomic import output_lock, refuse_inputs, remove, remove_stale_partials
from bioim2im.io.base import InMemoryImage, LazyImage
from bioim2im.prediction.display import BlockReporter
from bioim2im.prediction.image import (
    BlockCounts,
    Tiling,
    file_tiling,
    finish_image,
    image_specs,
    predict_image,
    share_one_heap,
    whole_tiling,
)
from bioim2im.prediction.inputs import InputImage, find_inputs, mismatch, open_inputs
from bioim2im.prediction.outputs import (
    FORMATS,
    TABLE,
    MemoryStore,
    Outputs,
    RunRecord,
    WorkDir,
    read_table,
    write_table,
)
from bioim2im.prediction.trained_model import TrainedModel, load_model

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

    from bioim2im.distributed import DistEnv

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


@dataclass
class InputResult:
    """What became of one input."""

    input: Path
    outputs: list[Path]
    voxels: int
    done_earlier: bool = False
    """Its outputs were finished by an earlier, interrupted run of the same command."""
    seconds: float | None = None
    """None when it was timed only as part of the whole command."""
    blocks: BlockCounts = field(default_factory=BlockCounts)


@dataclass
class PredictionSummary:
    """The outcome of :func:`predict_files`."""

    results: list[InputResult]
    table: Path
    """``predictions.csv``."""
    seconds: float
    quiet: bool = False
    """Nothing to render here: rank 0 of the torchrun workers reports (this process is another
    rank, or the one that launched them)."""
    part: str | None = None
    """``K/N`` when this process predicted one part (``--part``)."""

    @property
    def waiting(self) -> list[InputResult]:
        """Inputs whose outputs wait for other parts (not published yet)."""
        return [r for r in self.results if not all(p.exists() for p in r.outputs)]

    @property
    def voxels(self) -> int:
        """Voxels predicted by this command."""
        return sum(r.voxels for r in self.results if not r.done_earlier)

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / self.seconds if self.seconds > 0 else 0.0

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from bioim2im.prediction.display import summary_renderables

        yield from summary_renderables(self)


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
    :mod:`bioim2im.model.allowlist`). ``cluster`` (an address, ``local[:N]``, ``slurm``,
    ``lsf`` or ``pbs``) predicts on a Dask cluster (:mod:`bioim2im.prediction.cluster`).
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
        job = _Job.plan(
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
        job = _Job.plan(
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
    from bioim2im.prediction import parts

    started = time.monotonic()
    if part is not None and ((devices is not None and devices > 1) or launched_by_torchrun()):
        raise UserError("--part runs one process per part: leave out --devices and torchrun")
    share = parts.share(part, finalize)
    job = _Job.plan(
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
    job = _Job.plan(loaded, inputs, output, format, split, say, model)
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


# ---------------------------------------------------------------------------------------------
# One command's work


@dataclass
class _Job:
    """The inputs of one command, their outputs, and the fingerprint of the command."""

    model: TrainedModel
    images: list[InputImage]
    outputs: dict[str, Outputs]
    tilings: dict[str, Tiling]
    folder: Path
    format: str

    @classmethod
    def plan(
        cls,
        model: TrainedModel,
        inputs: str,
        folder: Path,
        format: str | None,
        split: str | None = None,
        report: Callable[[str], None] | None = None,
        given_model: str | Path | None = None,
    ) -> _Job:
        """``given_model``: the path the model was named by, an input the outputs must stay out of."""
        chosen = format or model.preset.predict.format
        if chosen not in FORMATS:
            raise UserError(f"--format {chosen!r}: choose one of {', '.join(FORMATS)}")
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--output {folder} is a file; give a folder for the predictions")
        existing = next((p for p in folder.absolute().parents if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise UserError(f"--output {folder}: {existing} is a file, not a directory")
        suffixes = _readable_suffixes(model)
        paths = find_inputs(
            inputs,
            manifest_column=model.preset.data.source,
            suffixes=suffixes,
            split_column=model.preset.data.split_column,
            split=split,
            report=report,
        )
        # The output folder is none of what the command reads (the model, the images, a
        # manifest), nor inside one, nor holds one; it may lie in a folder of input images.
        manifest = Path(inputs) if Path(inputs).suffix.lower() == ".csv" else None
        refuse_inputs(folder, [given_model, manifest, *paths])
        images = open_inputs(paths, model, suffixes)
        heads = tuple(model.heads)
        outputs = {found.stem: Outputs(folder, found.stem, heads, chosen) for found in images}
        tilings = {found.stem: file_tiling(model, found) for found in images}
        return cls(model, images, outputs, tilings, folder, chosen)

    @property
    def fingerprint(self) -> str:
        """The command: the model and its settings, the format and the inputs."""
        inputs = (self.input_fingerprint(found) for found in self.images)
        return _digest(self.model.fingerprint, self.format, *inputs)

    def input_fingerprint(self, found: InputImage) -> str:
        stat = found.path.stat()
        return _digest(
            self.model.fingerprint,
            self.format,
            str(found.path.resolve()),
            str(stat.st_mtime_ns),
            found.axes,
            str(found.image.shape),
            str(found.image.dtype),
        )

    def decide(self, overwrite: bool) -> dict[str, str]:
        """Per input: ``done`` (by an earlier run of this command), ``new``, ``resume`` or
        ``restart``; a UserError listing every output that stands in the way."""
        record = RunRecord(self.folder, self.fingerprint)
        table = read_table(self.folder)
        decisions, problems = {}, []
        for found in self.images:
            outputs = self.outputs[found.stem]
            existing = outputs.finished()
            # This command finished the input (or was publishing its outputs when it stopped),
            # in the run now interrupted or in an earlier one whose table says so.
            made_by = self.input_fingerprint(found)
            listed = all(table.get(self._relative(path)) == made_by for path in outputs.table_paths)
            ours = found.stem in record.done or listed
            if ours and len(existing) == len(outputs.published):
                decisions[found.stem] = "done"
                continue
            if existing and not (overwrite or ours):
                problems.append(f"{', '.join(map(str, existing))} exists (from {found.path})")
            state = WorkDir(outputs.work_dir).state(self.input_fingerprint(found))
            if state == "other" and not overwrite:
                problems.append(
                    f"{outputs.work_dir} holds an unfinished prediction of {found.path} made with "
                    "another model, other settings or another format"
                )
            decisions[found.stem] = {"new": "new", "same": "resume", "other": "restart"}[state]
        if problems:
            raise UserError("outputs are in the way (use --overwrite to replace them):", problems)
        return decisions

    def run(
        self, decisions: dict[str, str], env: DistEnv, reporter: BlockReporter
    ) -> list[InputResult]:
        record = RunRecord(self.folder, self.fingerprint)
        results = []
        if env.is_main:
            remove_stale_partials(self.folder)  # what a killed run left half-written
        try:
            for found in self.images:
                result = self.result(found, decisions[found.stem] == "done")
                if result.done_earlier and env.is_main:
                    # A run killed between publishing and tidying up left its work directory.
                    work = WorkDir(self.outputs[found.stem].work_dir)
                    if work.state(self.input_fingerprint(found)) == "same":
                        remove(work.path)
                if not result.done_earlier:
                    started = time.monotonic()
                    restart = decisions[found.stem] == "restart"
                    try:
                        result.blocks = self._predict(found, restart, env, reporter, record)
                    except OSError as exc:
                        raise self.write_failure(found, exc) from exc
                    result.seconds = time.monotonic() - started
                results.append(result)
        finally:
            reporter.close()
        if env.is_main:
            write_table(self.folder, self.rows())
            record.close()
        return results

    def _predict(
        self,
        found: InputImage,
        restart: bool,
        env: DistEnv,
        reporter: BlockReporter,
        record: RunRecord,
    ) -> BlockCounts:
        """Predict one input with every process; rank 0 finishes and publishes it."""
        settings = self.model.preset.predict
        outputs, tiling = self.outputs[found.stem], self.tilings[found.stem]
        specs = image_specs(self.model, found, tiling)
        work = WorkDir(outputs.work_dir)
        options = {"zarr_format": settings.zarr_format, "pyramid_levels": settings.pyramid_levels}
        # Rank 0 creates the work directory and the images; the others then open them.
        if env.is_main:
            work.start(self.input_fingerprint(found), fresh=restart)
            store = outputs.open_store(specs, **options)
        env.barrier()
        if not env.is_main:
            store = outputs.open_store(specs, **options)
        counts = predict_image(
            self.model,
            found,
            store,
            tiling,
            work=work,
            rank=env.rank,
            world=env.world_size,
            report=reporter.track(found.stem),
        )
        env.barrier()
        if env.is_main:
            # Recorded first: done in the record counts only once the outputs exist.
            record.mark_done(found.stem)
            finish_image(self.model, found, store, tiling)
        env.barrier()
        return counts

    def write_failure(self, found: InputImage, exc: OSError) -> EnvironmentFailure:
        """What to tell when writing ``found``'s prediction failed (disk full, permissions)."""
        where = exc.filename or self.outputs[found.stem].work_dir
        return EnvironmentFailure(
            f"cannot write the prediction of {found.path} ({where}: "
            f"{exc.strerror or exc}); the blocks finished so far are kept: free space or fix the "
            "permissions, then run the same command again to continue"
        )

    def result(self, found: InputImage, done_earlier: bool) -> InputResult:
        return InputResult(
            found.path, self.outputs[found.stem].published, found.voxels, done_earlier
        )

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.folder).as_posix()

    def rows(self) -> list[dict[str, str]]:
        rows = []
        # A package of another tool has its own processing, not bioim2im steps, for its outputs.
        configured = self.model.preset.model.heads
        for found in self.images:
            outputs = self.outputs[found.stem]
            specs = image_specs(self.model, found, self.tilings[found.stem])
            for head, spec in specs.items():
                rows.append(
                    {
                        "input": str(found.path.resolve()),
                        "head": head,
                        "output": self._relative(outputs.path(head)),
                        "axes": spec.axes,
                        "shape": "x".join(map(str, spec.shape)),
                        "dtype": str(spec.dtype),
                        "postprocess": (
                            steps_json(configured[head].postprocess) if head in configured else ""
                        ),
                        "made_by": self.input_fingerprint(found),
                    }
                )
        return rows

    def summary(
        self, results: list[InputResult], seconds: float, *, quiet: bool
    ) -> PredictionSummary:
        return PredictionSummary(results, self.folder / TABLE, seconds, quiet=quiet)


def steps_json(steps: Sequence[Any]) -> str:
    """Postprocessing steps as predictions.csv records them: ``[{"name": ..., params}]``."""
    import json

    return json.dumps([{"name": step.name, **step.params()} for step in steps])


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _readable_suffixes(model: TrainedModel) -> list[str]:
    """File types some registered reader opens, longest first (``.ome.tif`` before ``.tif``)."""
    found = {
        suffix.lower()
        for component in model.registry
        if component.kind == "reader"
        for suffix in component.extras.get("suffixes", ())
    }
    return sorted(found, key=len, reverse=True)
