"""Predicting on a cluster without torchrun: independent parts, then one finishing step.

``bioim2im predict RUN -i IMAGES -o OUT --part K/N`` predicts the K-th of N shares of every
image's blocks and records each block as it is written. The shares are runs of whole blocks,
whose borders lie on output chunk borders, so parts never write the same chunk. Parts are
independent processes (a SLURM array, jobs of any scheduler, on any machines that share the
output folder): they start in any order and at any time, and a part killed and started again
skips the blocks it had written.

The part that finds every block of an image written finishes it: the neighbourhood steps
(instance labels stitched across blocks) and publishing. ``bioim2im predict ... --finalize``
does the same for every image (and predicts nothing: with blocks missing, it says so); run it
after the parts when the last of them may have been stopped while finishing. Either way the
outputs are those a single process writes.

What happens once per image (deciding about existing outputs, creating its work directory and
images, finishing it) happens under the lock of the output folder that every command writing
there takes (:func:`~bioim2im.io.atomic.output_lock`): parts wait for each other's short
turns, while a whole prediction holds it from start to end. The lock is ``flock`` on a hidden
file there: it is released when the process holding it dies, so a killed part never leaves the
others waiting.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bioim2im.errors import UserError
from bioim2im.io.atomic import output_lock
from bioim2im.io.images import InputImage
from bioim2im.prediction.image import BlockCounts, finish_image, image_specs, predict_image
from bioim2im.prediction.outputs import RunRecord, Store, WorkDir, write_table
from bioim2im.prediction.summary import InputResult

if TYPE_CHECKING:
    from bioim2im.prediction.command import Command
    from bioim2im.prediction.display import BlockReporter

# ASCII digits only: int() would also read other scripts' digits ("１/２").
_PART = re.compile(r" *([0-9]{1,9}) */ *([0-9]{1,9}) *", re.ASCII)


def share(part: str | None, finalize: bool) -> tuple[int, int] | None:
    """The share ``--part`` asks for, or None for ``--finalize``, which finishes what every
    part predicted and so takes no part of its own."""
    if part is not None and finalize:
        raise UserError(
            f"--finalize finishes what all the parts predicted, so it takes no --part (got "
            f"--part {part!r}): run each part with --part K/N, then --finalize once without --part"
        )
    return None if part is None else parse_part(part)


def parse_part(text: str) -> tuple[int, int]:
    """``"K/N"`` as ``(K, N)``, 1 <= K <= N, in ASCII digits."""
    match = _PART.fullmatch(text)
    if match is None:
        raise UserError(f"--part {text!r}: give K/N, e.g. --part 2/8 (part 2 of 8)")
    part, parts = int(match[1]), int(match[2])
    if not 1 <= part <= parts:
        raise UserError(f"--part {text!r}: K must be between 1 and N ({parts}), got {part}")
    return part, parts


def folder_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the output folder's lock (waiting for it): the one every command writing there
    takes (:func:`~bioim2im.io.atomic.output_lock`)."""
    return output_lock(folder, wait=True)


def predict_part(
    job: Command, part: tuple[int, int], *, overwrite: bool, reporter: BlockReporter
) -> list[InputResult]:
    """Predict share ``part`` (K, N) of every image of ``job``; finish the images it completes."""
    with folder_lock(job.folder):
        decisions = job.decide(overwrite)  # every problem, before anything is written
    results = []
    try:
        for found in job.images:
            result = job.result(found, decisions[found.stem] == "done")
            if not result.done_earlier:
                started = time.monotonic()
                try:
                    predicted = _predict_share(job, found, part, overwrite, reporter)
                except OSError as exc:
                    raise job.write_failure(found, exc) from exc
                if predicted is None:
                    result.done_earlier = True  # another part finished it meanwhile
                else:
                    result.blocks = predicted
                    result.seconds = time.monotonic() - started
            results.append(result)
    finally:
        reporter.close()
    _finish_run(job)
    return results


def _predict_share(
    job: Command, found: InputImage, part: tuple[int, int], overwrite: bool, reporter: BlockReporter
) -> BlockCounts | None:
    """Predict this part's blocks of ``found`` and finish it when they were the last ones;
    None when another part had finished it already."""
    with folder_lock(job.folder):
        # Other parts may have started or even finished it since the command began.
        decision = job.decide(overwrite)[found.stem]
        if decision == "done":
            return None
        store = _open(job, found, fresh=decision == "restart")
    outputs = job.outputs[found.stem]
    counts = predict_image(
        job.model,
        found,
        store,
        job.tilings[found.stem],
        work=WorkDir(outputs.work_dir),
        rank=part[0] - 1,
        world=part[1],
        name=f"part{part[0]}of{part[1]}",
        report=reporter.track(found.stem),
    )
    with folder_lock(job.folder):
        if not _missing(job, found):
            _finish(job, found, store)
    return counts


def finalize(job: Command) -> list[InputResult]:
    """Finish every image whose blocks are all written; a UserError naming those that are not."""
    if not job.folder.is_dir():
        raise UserError(f"{job.folder}: no part of this command has predicted anything there yet")
    problems = []
    results = []
    with folder_lock(job.folder):
        record = RunRecord(job.folder, job.fingerprint)
        for found in job.images:
            outputs = job.outputs[found.stem]
            state = WorkDir(outputs.work_dir).state(job.input_fingerprint(found))
            published = len(outputs.finished()) == len(outputs.published)
            # Published by this command, or all published with nothing left to finish.
            done = published and (found.stem in record.done or state == "new")
            results.append(job.result(found, done_earlier=done))
            if done:
                continue
            missing = _missing(job, found) if state == "same" else None
            if missing is None:
                problems.append(
                    f"{found.path}: no part of this command has predicted it yet (in {job.folder})"
                )
            elif missing:
                total = len(job.tilings[found.stem].plan) * found.time_points
                problems.append(
                    f"{found.path}: {missing} of {total} blocks are not predicted yet; run the "
                    "parts that have not finished (a part run again resumes where it stopped)"
                )
            else:
                _finish(job, found, _open(job, found, fresh=False))
    if problems:
        raise UserError("cannot finish the predictions:", problems)
    _finish_run(job)
    return results


def _open(job: Command, found: InputImage, *, fresh: bool) -> Store:
    """Create (or open) ``found``'s work directory and output images; under the lock."""
    settings = job.model.preset.predict
    outputs = job.outputs[found.stem]
    # Other parts may be writing in it: zarr's temporary files are theirs.
    WorkDir(outputs.work_dir).start(job.input_fingerprint(found), fresh=fresh, alone=False)
    return outputs.open_store(
        image_specs(job.model, found, job.tilings[found.stem]),
        zarr_format=settings.zarr_format,
        pyramid_levels=settings.pyramid_levels,
    )


def _missing(job: Command, found: InputImage) -> int:
    """Blocks of ``found`` (over its time points) no part has recorded as written."""
    from bioim2im.prediction.blockwise import load_finished_blocks

    plan = job.tilings[found.stem].plan
    work = WorkDir(job.outputs[found.stem].work_dir)
    missing = 0
    for t in range(found.time_points):
        record = {**plan.fingerprint(), "time_point": t}
        finished: set[int] = set()
        for path in work.progress_files(t):
            finished |= load_finished_blocks(path, record)
        missing += len(plan) - len(finished & set(range(len(plan))))
    return missing


def _finish(job: Command, found: InputImage, store: Store) -> None:
    """Run the neighbourhood steps and publish ``found``'s outputs; under the lock."""
    record = RunRecord(job.folder, job.fingerprint)
    outputs = job.outputs[found.stem]
    if found.stem in record.done and len(outputs.finished()) == len(outputs.published):
        return
    # Recorded first: done in the record counts only once the outputs exist.
    record.mark_done(found.stem)
    finish_image(job.model, found, store, job.tilings[found.stem])


def _finish_run(job: Command) -> None:
    """Once every image is published: ``predictions.csv``, and no record or lock left."""
    with folder_lock(job.folder):
        record = RunRecord(job.folder, job.fingerprint)
        published = all(
            found.stem in record.done
            and len(job.outputs[found.stem].finished()) == len(job.outputs[found.stem].published)
            for found in job.images
        )
        if not published:
            return
        write_table(job.folder, job.rows())
        record.close()
