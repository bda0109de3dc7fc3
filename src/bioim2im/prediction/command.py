"""One ``bioim2im predict`` command's work: its inputs, their outputs and the command's
fingerprint, planned before anything is written (:meth:`Command.plan`), what to do with
existing outputs (:meth:`Command.decide`), and every input predicted in turn by every process
(:meth:`Command.run`); :mod:`bioim2im.prediction.parts` runs one part of it instead."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.errors import EnvironmentFailure, UserError
from bioim2im.formats.trained_model import TrainedModel
from bioim2im.io.atomic import refuse_inputs, remove, remove_stale_partials
from bioim2im.io.images import InputImage
from bioim2im.prediction.image import (
    BlockCounts,
    Tiling,
    file_tiling,
    finish_image,
    image_specs,
    predict_image,
)
from bioim2im.prediction.inputs import find_inputs, open_inputs
from bioim2im.prediction.outputs import (
    FORMATS,
    TABLE,
    Outputs,
    RunRecord,
    WorkDir,
    read_table,
    write_table,
)
from bioim2im.prediction.summary import InputResult, PredictionSummary

if TYPE_CHECKING:
    from bioim2im.distributed import DistEnv
    from bioim2im.prediction.display import BlockReporter


@dataclass
class Command:
    """The inputs of one predict command, their outputs, and the fingerprint of the command."""

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
    ) -> Command:
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
        labels = tuple(name for name, head in model.heads.items() if head.is_label)
        outputs = {
            found.stem: Outputs(folder, found.stem, heads, chosen, labels) for found in images
        }
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
            # --overwrite predicts again what this command finished: the user asks for it (a
            # new bioim2im, a timing), and nothing else tells a finished output from a stale one.
            if ours and len(existing) == len(outputs.published) and not overwrite:
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
        options: dict[str, Any] = {
            "zarr_format": settings.zarr_format,
            "pyramid_levels": settings.pyramid_levels,
        }
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
