"""Block-wise prediction on a Dask cluster: ``bioim2im predict ... --cluster WHERE``.

``WHERE`` is the address of a running Dask scheduler (``tcp://host:8786``), ``local`` or
``local:N`` (a ``LocalCluster`` of N worker processes on this machine, one per GPU or, without
one, one per core), or ``slurm``, ``lsf`` or ``pbs``: batch jobs of workers that dask-jobqueue
submits, as the ``[cluster]`` settings say (``--set cluster.queue=gpu``...). It needs the
``cluster`` extra (``pip install 'bioim2im[cluster]'``). No scheduler of bioim2im's own: Dask
schedules, retries and balances the tasks.

The work is today's block plan (:mod:`~bioim2im.prediction.image`), cut into tasks of
consecutive blocks in sweep order. Each task predicts its blocks with the values a single
process gives them, bit for bit (:mod:`~bioim2im.prediction.blockwise.replay`: the windows
its neighbours would hand on, and each window's batch, run again), writes them chunk-aligned
straight into the output store and records each block as it is written, as ``--part`` does.
Those records are the truth: a task run again (its worker died) or a run submitted again (the
client died, the scheduler went away) predicts only the blocks not recorded. Each worker
process loads the model once (:func:`loaded_model`) and predicts one task at a time.

When every block of an image is recorded, one more task runs its neighbourhood steps (instance
labels stitched across blocks) and publishes it; the client writes ``predictions.csv`` at the
end. The client holds the output folder's lock for the whole run, as a single process does.

Faults. A worker that dies mid-task: Dask runs the task again elsewhere, which skips the blocks
recorded and predicts the others to the same bytes. A task that fails is tried again
(``cluster.retries``); a block that still fails stops the run with one message naming the
image, the block and the cause. The scheduler gone: the run stops with one message; the blocks
recorded stay, and the same command continues the run.

Everything the workers read and write (the model, the inputs, the output folder) must be on a
file system they share with the client, at the same paths.

:func:`run_blocks` is the mechanism without the command: any caller hands it the tasks of its
images and gets them run on the cluster; ``postprocess --cluster``
(:mod:`bioim2im.prediction.postprocess`) and plugins' own prediction commands do.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bioim2im.errors import EnvironmentFailure, UserError

if TYPE_CHECKING:
    from distributed import Client

    from bioim2im.config.schema import ClusterConfig
    from bioim2im.formats.trained_model import TrainedModel
    from bioim2im.io.images import InputImage
    from bioim2im.prediction.blockwise import BlockPlan
    from bioim2im.prediction.command import Command
    from bioim2im.prediction.display import BlockReporter
    from bioim2im.prediction.image import BlockCounts, Tiling
    from bioim2im.prediction.outputs import Store, WorkDir
    from bioim2im.prediction.summary import InputResult

JOBQUEUE = ("slurm", "lsf", "pbs")
SLOT = "bioim2im-slot"
"""A Dask resource our workers have one of: one prediction task at a time per worker."""
MAX_BLOCKS_PER_TASK = 64
TASKS_PER_WORKER = 1
"""Tasks per worker (when the blocks allow): each task runs again the windows its earlier
neighbours hand on, so fewer, larger tasks cost less; a block done is reported as it is done."""
PROGRESS = "bioim2im-blocks"
"""The Dask event topic each block done is reported on (through the scheduler)."""
INSTALL = "pip install 'bioim2im[cluster]'"


# ---------------------------------------------------------------------------------------------
# Settings


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], ClusterConfig]:
    """``--set`` options for the model, and the cluster settings the ``cluster.*`` ones give.

    The cluster settings come from the command alone: a model's own preset, which may come from
    elsewhere, never decides what a cluster job runs. They are no part of the model's
    settings either, so changing them does not stop a run from resuming.
    """
    from pydantic import ValidationError

    from bioim2im.config.loading import apply_override, parse_override
    from bioim2im.config.schema import ClusterConfig

    model: list[str] = []
    data: dict[str, Any] = {}
    for text in overrides:
        keys, _ = parse_override(text)
        if keys[0] == "cluster":
            data = apply_override(data, text)
        else:
            model.append(text)
    section = data.get("cluster", {})
    if not isinstance(section, dict):
        raise UserError("--set cluster=...: give its keys, e.g. --set cluster.queue=gpu")
    try:
        return model, ClusterConfig.model_validate(section)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in ("cluster", *error["loc"]))
            given = f" (got {error['input']!r})" if error["type"] != "extra_forbidden" else ""
            problems.append(f"{key}: {error['msg']}{given}")
        raise UserError(
            "--set cluster...: invalid settings (see `bioim2im options cluster`):", problems
        ) from None


def check_where(where: str) -> str:
    """``--cluster`` as given, checked: an address, ``local[:N]`` or a jobqueue kind."""
    text = where.strip()
    if text in JOBQUEUE or text == "local":
        return text
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isascii() or not count.isdigit() or not 1 <= int(count) <= 1024:
            raise UserError(f"--cluster {where!r}: give local:N with N workers (1 to 1024)")
        return text
    host = text.split("://", 1)[-1]
    if "://" in text and not text.startswith(("tcp://", "tls://", "ws://", "wss://", "inproc://")):
        raise UserError(
            f"--cluster {where!r}: a scheduler address is tcp://HOST:PORT (or tls://...); "
            f"else local, local:N, {', '.join(JOBQUEUE)}"
        )
    if not host or any(c.isspace() for c in host) or ":" not in host:
        raise UserError(
            f"--cluster {where!r}: give a scheduler's address (tcp://HOST:PORT), local, local:N "
            f"or one of {', '.join(JOBQUEUE)}"
        )
    return text if "://" in text else f"tcp://{text}"


def _jobqueue_kwargs(kind: str, settings: ClusterConfig) -> dict[str, Any]:
    """The dask-jobqueue arguments the ``[cluster]`` settings make for ``kind``."""
    import sys

    walltime = settings.walltime
    if kind == "lsf":  # LSF takes [HH:]MM
        parts = walltime.split("-")[-1].split(":")
        days = int(walltime.split("-")[0]) if "-" in walltime else 0
        walltime = f"{int(parts[0]) + 24 * days:02d}:{parts[1]}"
    kwargs: dict[str, Any] = {
        "queue": settings.queue,
        "cores": settings.cores,
        "memory": settings.memory,
        "processes": settings.processes,
        "walltime": walltime,
        "job_extra_directives": list(settings.job_extra_directives),
        "job_script_prologue": [*settings.job_script_prologue, *_huge_pages_line()],
        "interface": settings.interface,
        "local_directory": settings.local_directory,
        "log_directory": settings.log_directory,
        "worker_extra_args": ["--resources", f"{SLOT}=1"],
        "job_name": "bioim2im",
        "python": sys.executable,
    }
    if settings.account is not None:
        kwargs["project" if kind == "lsf" else "account"] = settings.account
    return {key: value for key, value in kwargs.items() if value is not None}


def _huge_pages_line() -> list[str]:
    """The job script's line that gives its workers glibc's huge-page tunable (see
    :mod:`bioim2im.memory_pages`; the nodes' kernels are not known here, and the tunable does
    nothing where transparent huge pages are always or never given, or glibc predates it),
    unless the user's tunables name it already or the user opted out."""
    from bioim2im.memory_pages import TUNABLE, opted_out

    if opted_out():
        return []
    return [
        f'case ":$GLIBC_TUNABLES:" in *:{TUNABLE}=*) ;; '
        f'*) export GLIBC_TUNABLES="${{GLIBC_TUNABLES:+$GLIBC_TUNABLES:}}{TUNABLE}=1" ;; esac'
    ]


def job_script(kind: str, settings: ClusterConfig, scheduler: str = "tcp://SCHEDULER:8786") -> str:
    """The batch script each job of ``--cluster KIND`` runs (nothing is submitted)."""
    classes = _jobqueue_classes()
    job = classes[kind][1](scheduler=scheduler, name="bioim2im", **_jobqueue_kwargs(kind, settings))
    return str(job.job_script())


def _jobqueue_classes() -> dict[str, tuple[Any, Any]]:
    try:
        from dask_jobqueue import LSFCluster, PBSCluster, SLURMCluster
        from dask_jobqueue.lsf import LSFJob
        from dask_jobqueue.pbs import PBSJob
        from dask_jobqueue.slurm import SLURMJob
    except ImportError:
        raise UserError(f"--cluster slurm|lsf|pbs needs dask-jobqueue: {INSTALL}") from None
    return {
        "slurm": (SLURMCluster, SLURMJob),
        "lsf": (LSFCluster, LSFJob),
        "pbs": (PBSCluster, PBSJob),
    }


# ---------------------------------------------------------------------------------------------
# Connecting


@dataclass
class Connection:
    """A client of the cluster, and how tasks ask for a worker."""

    client: Client
    address: str
    resources: dict[str, float] | None
    """``{SLOT: 1}`` where every worker has our slot (one task at a time), else None (each
    worker process then runs one task at a time all the same, the others waiting)."""

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))


@contextlib.contextmanager
def connect(
    where: str, settings: ClusterConfig, say: Callable[[str], None] | None
) -> Iterator[Connection]:
    """A client of the cluster ``--cluster`` names (see the module docstring)."""
    where = check_where(where)
    try:
        import dask
        import distributed
    except ImportError:
        raise UserError(f"--cluster needs Dask's distributed scheduler: {INSTALL}") from None
    with contextlib.ExitStack() as stack:
        # Dask logs what goes wrong as it happens (reconnecting, with tracebacks); the run
        # reports it once, in its own words.
        stack.enter_context(_quiet("distributed"))
        # A task whose workers die this often stops the run (the schedulers started here).
        stack.enter_context(
            dask.config.set({"distributed.scheduler.allowed-failures": settings.retries + 1})
        )
        resources: dict[str, float] | None = {SLOT: 1}
        if where == "local" or where.startswith("local:"):
            count = int(where.split(":")[1]) if ":" in where else _local_workers()
            stack.enter_context(dask.config.set(_worker_environment()))
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=count,
                    threads_per_worker=1,
                    processes=True,
                    resources={SLOT: 1},
                    dashboard_address=":0",
                    silence_logs=40,
                )
            )
            client = stack.enter_context(distributed.Client(cluster))
        elif where in JOBQUEUE:
            kind = _jobqueue_classes()[where][0]
            cluster = stack.enter_context(kind(**_jobqueue_kwargs(where, settings)))
            cluster.scale(jobs=settings.jobs)
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:
                client = stack.enter_context(distributed.Client(where, timeout="10s"))
            except (OSError, TimeoutError) as exc:
                raise EnvironmentFailure(
                    f"--cluster {where}: no Dask scheduler answers there ({exc})"
                ) from None
            workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
            if not workers or not all(SLOT in w.get("resources", {}) for w in workers):
                resources = None
        if say is not None:
            say(f"Dask: {client.scheduler.address}, dashboard {client.dashboard_link}")
        yield Connection(client, where, resources)


def _worker_environment() -> dict[str, Any]:
    """The local workers' start-up variables: Dask's, without its ``MALLOC_TRIM_THRESHOLD_``
    (which hands every allocation over 128 KiB back to the kernel, to be faulted in again on
    the next batch), with the huge-page tunable (:mod:`bioim2im.memory_pages`)."""
    from bioim2im.memory_pages import huge_page_environment

    key = "distributed.nanny.pre-spawn-environ"
    return {f"{key}.MALLOC_TRIM_THRESHOLD_": None} | {
        f"{key}.{name}": value for name, value in huge_page_environment().items()
    }


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    import logging

    names = [n for n in logging.root.manager.loggerDict if n == name or n.startswith(f"{name}.")]
    loggers = [logging.getLogger(n) for n in {name, *names}]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _local_workers() -> int:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# What the workers run


@dataclass(frozen=True)
class ModelSource:
    """How a worker loads the model: what the client loaded, by the same path."""

    model: str
    overrides: tuple[str, ...]
    trust_model: bool
    fingerprint: str
    """The client's model: a worker that loads another (the files changed meanwhile) stops."""


@dataclass(frozen=True)
class ImageTask:
    """One image of a run as a worker opens it: the model, the input, where its outputs go."""

    source: ModelSource
    path: str
    stem: str
    folder: str
    format: str
    plan: str
    """The client's block plan (JSON of its fingerprint): the worker's must be the same."""


TASK_LOCK = threading.Lock()
"""Held by every task while it runs: one task at a time per worker process, whatever its
threads."""
_models: dict[ModelSource, TrainedModel] = {}
_images: dict[ImageTask, tuple[InputImage, Tiling, Store]] = {}
_model_loads = 0
"""How often this process loaded a model (once per model)."""


def loaded_model(source: ModelSource) -> TrainedModel:
    """The model, loaded once per worker process (on its GPU when it has one)."""
    global _model_loads
    if source not in _models:
        from bioim2im.formats import load_model
        from bioim2im.memory_pages import keep_freed_memory

        keep_freed_memory()  # whatever the worker's start-up variables made of its allocator

        _models.clear()
        _images.clear()
        model = load_model(
            source.model, source.overrides, _worker_device(), trust_model=source.trust_model
        )
        _model_loads += 1
        if model.fingerprint != source.fingerprint:
            raise UserError(
                f"{source.model}: a worker loaded another model than the client (were its files "
                "changed, or does the worker see other files at that path?)"
            )
        _models[source] = model
    return _models[source]


def _worker_device() -> str:
    import torch

    if not torch.cuda.is_available():
        _use_worker_threads()
        return "cpu"
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return "cuda"
    # The workers of a LocalCluster are numbered: each takes its own GPU.
    index = int(name) if isinstance(name, int) or str(name).isdigit() else 0
    return f"cuda:{index % torch.cuda.device_count()}"


def _use_worker_threads() -> None:
    """Torch takes the worker's threads (a Dask nanny sets OMP_NUM_THREADS=1 in its workers)."""
    import torch

    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return
    torch.set_num_threads(max(1, int(threads)))


def _opened(task: ImageTask) -> tuple[TrainedModel, InputImage, Tiling, Store]:
    """The model and the image, its blocks and its output store, opened once per process."""
    model = loaded_model(task.source)
    if task not in _images:
        from bioim2im.io import open_image
        from bioim2im.io.images import InputImage
        from bioim2im.prediction.image import file_tiling, image_specs
        from bioim2im.prediction.outputs import Outputs

        image = open_image(task.path, axes=model.preset.data.axes, registry=model.registry)
        found = InputImage(Path(task.path), task.stem, image)
        tiling = file_tiling(model, found)
        if json.dumps(tiling.plan.fingerprint()) != task.plan:
            raise UserError(
                f"{task.path}: a worker cut it into other blocks than the client (another "
                "version of bioim2im, or another image at that path?)"
            )
        labels = tuple(name for name, head in model.heads.items() if head.is_label)
        outputs = Outputs(Path(task.folder), task.stem, tuple(model.heads), task.format, labels)
        settings = model.preset.predict
        store = outputs.open_store(
            image_specs(model, found, tiling),
            zarr_format=settings.zarr_format,
            pyramid_levels=settings.pyramid_levels,
        )
        if len(_images) >= 4:
            _images.pop(next(iter(_images)))
        _images[task] = (found, tiling, store)
    return (model, *_images[task])


def predict_task(task: ImageTask, time_point: int, blocks: tuple[int, ...]) -> tuple[int, int]:
    """A task: predict ``blocks`` of ``time_point`` (those not recorded yet); returns (blocks
    recorded before, blocks predicted). A failure names the block and the cause."""
    from bioim2im.prediction.image import predict_chosen_blocks

    with TASK_LOCK:  # one task at a time per process, whatever the worker's threads
        tiling = None
        try:
            model, found, tiling, store = _opened(task)
            return predict_chosen_blocks(
                model,
                found,
                store,
                tiling,
                time_point,
                blocks,
                work=_work(task),
                name=f"dask-b{blocks[0]:08d}",
                report=_block_done,
            )
        except Exception as exc:
            where = _failing_block(task, tiling, time_point, blocks)
            cause = exc.message if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            raise BlockFailed(f"{where}: {cause}", isinstance(exc, OSError)) from exc


def finish_task(task: ImageTask) -> None:
    """A task: the neighbourhood steps over the whole image, then publish its outputs."""
    from bioim2im.prediction.image import finish_image

    with TASK_LOCK:
        model, found, tiling, store = _opened(task)
        finish_image(model, found, store, tiling)
        _images.pop(task, None)


def _work(task: ImageTask) -> WorkDir:
    """The image's work directory (its blocks' records)."""
    from bioim2im.prediction.outputs import Outputs, WorkDir

    return WorkDir(Outputs(Path(task.folder), task.stem, (), task.format).work_dir)


def _block_done(done: int, total: int) -> None:
    """Tell the client, through the scheduler, that one more block is done."""
    from distributed import get_worker

    with contextlib.suppress(ValueError):
        get_worker().log_event(PROGRESS, 1)


class BlockFailed(RuntimeError):
    """A task's block failed: the message names the image, the block and the cause; the second
    argument says whether the cause was the environment (a disk full, permissions)."""

    def __str__(self) -> str:
        return str(self.args[0])

    @property
    def environment(self) -> bool:
        return bool(self.args[1]) if len(self.args) > 1 else False


def _failing_block(
    task: ImageTask, tiling: Tiling | None, time_point: int, blocks: tuple[int, ...]
) -> str:
    """The image and the block a task was predicting (the first of its blocks not recorded)."""
    from bioim2im.prediction.blockwise import load_finished_blocks

    when = f" time point {time_point}," if time_point else ""
    if tiling is None:  # it failed before its first block
        return f"{task.path}:{when} blocks {blocks[0]} to {blocks[-1]}"
    record = {**tiling.plan.fingerprint(), "time_point": time_point}
    finished: set[int] = set()
    with contextlib.suppress(OSError, ValueError):
        for path in _work(task).progress_files(time_point):
            finished |= load_finished_blocks(path, record)
    block = next((b for b in blocks if b not in finished), blocks[0])
    region = ", ".join(f"{s.start}:{s.stop}" for s in tiling.plan.core(block))
    return f"{task.path}:{when} block {block} (voxels {region})"


# ---------------------------------------------------------------------------------------------
# The client


def tasks_of(todo: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """``todo`` (in sweep order) cut into runs of ``size`` consecutive blocks."""
    return [tuple(todo[i : i + size]) for i in range(0, len(todo), size)]


def box_tasks(plan: BlockPlan, todo: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """``todo`` (in sweep order) cut into boxes of at most about ``size`` blocks, each in sweep
    order.

    A task runs again the windows of its earlier neighbours that reach into it (and their
    batches): the thinner the box along an axis, in windows, the more of them. So the image's
    grid of blocks is halved, again and again, across the axis along which the boxes are
    thickest in windows, until they are small enough: equal boxes, as near cubes as the grid
    allows.
    """
    grid = plan.grid
    edges = list(grid)
    wanted = max(1, math.ceil(len(plan) / max(size, 1)))

    def boxes() -> int:
        return math.prod(math.ceil(g / e) for g, e in zip(grid, edges, strict=True))

    while boxes() < wanted and any(e > 1 for e in edges):
        thickness = [
            e * b / r if e > 1 else -1.0
            for e, b, r in zip(edges, plan.block_size, plan.roi_size, strict=True)
        ]
        axis = max(range(len(grid)), key=lambda a: (thickness[a], -a))
        edges[axis] = math.ceil(edges[axis] / 2)
    groups: dict[tuple[int, ...], list[int]] = {}
    for block in todo:
        position = [int(p) for p in np.unravel_index(block, grid)]
        key = tuple(p // e for p, e in zip(position, edges, strict=True))
        groups.setdefault(key, []).append(block)
    return [tuple(blocks) for blocks in groups.values()]


@dataclass
class ImageWork:
    """What is left of one image: its blocks not recorded yet, in runs to predict in order
    (per time point, say), the task that predicts some of them and the one that finishes it."""

    name: str
    """What messages call it (its path)."""
    todo: dict[Any, list[int]]
    """Per run (a time point; a head and a time point), its blocks left, in sweep order."""
    voxels: int
    """Voxels of the blocks left."""
    predict: Callable[..., Any]
    """The task, called with ``(*args, run, blocks)``: returns (blocks recorded before, done)."""
    args: tuple[Any, ...]
    finish: Callable[..., Any] | None = None
    """The task run with ``args`` once every block is done (neighbourhood steps, publish)."""
    before_finish: Callable[[], None] | None = None
    """Called on the client once every block is done, before the finishing task."""
    counts: BlockCounts | None = None
    """Told the blocks some other process recorded meanwhile (predicted -> resumed)."""
    group: Callable[[Sequence[int], int], list[tuple[int, ...]]] = tasks_of
    """How its blocks left are cut into tasks of about a given number of blocks."""


def run_blocks(
    connection: Connection,
    images: Sequence[ImageWork],
    settings: ClusterConfig,
    reporter: BlockReporter | None,
) -> None:
    """Run every image's blocks as tasks on the cluster, then finish each image (a task too)
    once all of its blocks are done; progress to ``reporter``. Raises one UserError naming a
    block that kept failing and why, or an EnvironmentFailure when the scheduler went away or
    the environment failed (the blocks written are recorded either way).

    The mechanism for any caller: a plugin's own prediction hands its images here with its own
    task functions (module-level functions a worker imports, which record their blocks).
    """
    from distributed import as_completed

    client = connection.client
    total_blocks = sum(len(b) for work in images for b in work.todo.values())
    size = settings.blocks_per_task or min(
        MAX_BLOCKS_PER_TASK,
        max(1, math.ceil(total_blocks / (TASKS_PER_WORKER * connection.workers))),
    )
    options: dict[str, Any] = {"retries": settings.retries, "pure": False}
    if connection.resources:
        options["resources"] = connection.resources
    futures: dict[Any, tuple[ImageWork, tuple[int, ...]]] = {}
    left: dict[int, int] = {}
    for number, work in enumerate(images):
        left[number] = 0
        for run, todo in work.todo.items():
            for blocks in work.group(todo, size):
                future = client.submit(work.predict, *work.args, run, blocks, **options)
                futures[future] = (work, blocks)
                left[number] += 1
    which = {id(work): number for number, work in enumerate(images)}
    track = reporter.track("blocks") if reporter is not None else None
    progress = track(total_blocks, sum(w.voxels for w in images)) if track is not None else None
    done = [0]

    def block_done(event: Any) -> None:
        # Told by the workers as each block is written (a block predicted again counts again).
        done[0] = min(done[0] + 1, total_blocks)
        if progress is not None and done[0] < total_blocks:
            progress(done[0], total_blocks)

    client.subscribe_topic(PROGRESS, block_done)
    pending = as_completed(list(futures))
    # Images with nothing left to predict are finished at once.
    finishing = [_finish(client, w, options) for n, w in enumerate(images) if left[n] == 0]
    try:
        for future in pending:
            if future not in futures:
                _result(future, None, (), connection, settings)
                continue
            work, blocks = futures[future]
            skipped, _ = _result(future, work, blocks, connection, settings)
            if work.counts is not None:
                work.counts.predicted -= skipped
                work.counts.resumed += skipped
            left[which[id(work)]] -= 1
            if left[which[id(work)]] == 0:
                finishing.append(_finish(client, work, options))
                if finishing[-1] is not None:
                    pending.add(finishing[-1])
        for future in finishing:
            if future is not None:
                _result(future, None, (), connection, settings)
        if progress is not None:
            progress(total_blocks, total_blocks)
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(PROGRESS)
        if reporter is not None:
            reporter.close()


def _finish(client: Any, work: ImageWork, options: dict[str, Any]) -> Any:
    if work.before_finish is not None:
        work.before_finish()
    if work.finish is None:
        return None
    return client.submit(work.finish, *work.args, **options)


def _result(
    future: Any,
    work: ImageWork | None,
    blocks: tuple[int, ...],
    connection: Connection,
    settings: ClusterConfig,
) -> Any:
    """A task's result; its failure as one message."""
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    try:
        return future.result()
    except BlockFailed as exc:
        tries = settings.retries + 1
        text = f"a block failed {tries} time{'s' if tries > 1 else ''} on the cluster: {exc}"
        if exc.environment:
            raise EnvironmentFailure(
                f"{text}; the blocks finished so far are recorded: fix it, then run the same "
                "command again to continue"
            ) from None
        raise UserError(text) from None
    except KilledWorker as exc:
        what = (
            f"blocks {blocks[0]} to {blocks[-1]} of {work.name}"
            if work is not None and blocks
            else "finishing an image"
        )
        raise UserError(
            f"{what} killed the workers running them again and again ({exc}): out of memory? "
            "See the workers' logs; a smaller predict.memory_gb or cluster.blocks_per_task helps"
        ) from None
    except (FutureCancelledError, OSError, TimeoutError) as exc:
        if connection.client.status != "running" or isinstance(exc, FutureCancelledError):
            raise EnvironmentFailure(
                f"lost the Dask scheduler ({connection.address}); the blocks written so far are "
                "recorded: run the same command again to continue"
            ) from None
        raise


# ---------------------------------------------------------------------------------------------
# bioim2im predict --cluster


def predict_on_cluster(
    job: Command,
    where: str,
    settings: ClusterConfig,
    source: ModelSource,
    *,
    overwrite: bool,
    reporter: BlockReporter,
    say: Callable[[str], None] | None,
) -> list[InputResult]:
    """Predict every input of ``job`` on the cluster ``where``; see the module docstring."""
    from bioim2im.io.atomic import output_lock, remove, remove_stale_partials
    from bioim2im.prediction.image import image_specs
    from bioim2im.prediction.outputs import RunRecord, WorkDir, write_table

    check_where(where)
    with output_lock(job.folder):
        decisions = job.decide(overwrite)
        remove_stale_partials(job.folder)
        record = RunRecord(job.folder, job.fingerprint)
        results, works = [], []
        settings_of = job.model.preset.predict
        for found in job.images:
            result = job.result(found, decisions[found.stem] == "done")
            results.append(result)
            outputs, tiling = job.outputs[found.stem], job.tilings[found.stem]
            work = WorkDir(outputs.work_dir)
            if result.done_earlier:
                # A run killed between publishing and tidying up left its work directory.
                if work.state(job.input_fingerprint(found)) == "same":
                    remove(work.path)
                continue
            try:
                work.start(job.input_fingerprint(found), fresh=decisions[found.stem] == "restart")
                outputs.open_store(  # creates the images; the workers open them
                    image_specs(job.model, found, tiling),
                    zarr_format=settings_of.zarr_format,
                    pyramid_levels=settings_of.pyramid_levels,
                )
            except OSError as exc:
                raise job.write_failure(found, exc) from exc
            works.append(_image_work(job, found, source, work, result, record))
        if works:
            agreed = settled_source(job, source)  # before the cluster's processes start
            for image in works:
                image.args = (replace(image.args[0], source=agreed), *image.args[1:])
            with connect(where, settings, say) as connection:
                run_blocks(connection, works, settings, reporter)
        write_table(job.folder, job.rows())
        record.close()
    return results


def settled_source(job: Command, source: ModelSource) -> ModelSource:
    """``source`` with ``predict.channels_last`` and ``predict.compile`` settled on the client
    when they are ``"auto"``, so that every worker runs the network alike: a worker measuring
    for itself could choose another layout, or compile where another does not, and round its
    blocks differently from its neighbours'. The layout is measured here, before the cluster
    starts; ``compile`` is off unless asked for: each worker would pay for compiling its own
    (on two cores, segmentation-3d's U-Net compiled on each of two workers took 138 s for
    128 x 1024 x 1024, 126 s eagerly)."""
    from bioim2im.formats import load_model
    from bioim2im.prediction.blockwise.layout import decide_layout_ahead

    predict = job.model.preset.predict
    if predict.channels_last != "auto" and predict.compile != "auto":
        return source
    roi = job.tilings[job.images[0].stem].plan.roi_size
    channels_last = decide_layout_ahead(
        job.model.network,
        job.model.device,
        (predict.batch_size, job.model.in_channels, *roi),
        predict.channels_last,
    )
    settled = (
        *source.overrides,
        f"predict.channels_last={str(channels_last).lower()}",
        f"predict.compile={str(predict.compile is True).lower()}",
    )
    model = load_model(source.model, settled, trust_model=source.trust_model)
    return replace(source, overrides=settled, fingerprint=model.fingerprint)


def _image_work(
    job: Command,
    found: InputImage,
    source: ModelSource,
    work: Any,
    result: InputResult,
    record: Any,
) -> ImageWork:
    """The blocks of ``found`` not recorded yet, per time point, in sweep order."""
    from bioim2im.prediction.blockwise import load_finished_blocks

    plan = job.tilings[found.stem].plan
    order = plan.sweep_order()
    todo, voxels = {}, {}
    for t in range(found.time_points):
        fingerprint = {**plan.fingerprint(), "time_point": t}
        finished: set[int] = set()
        for path in work.progress_files(t):
            finished |= load_finished_blocks(path, fingerprint)
        left = [b for b in order if b not in finished]
        result.blocks.total += len(order)
        result.blocks.resumed += len(order) - len(left)
        result.blocks.predicted += len(left)
        if left:
            todo[t] = left
    for block in {b for blocks in todo.values() for b in blocks}:
        voxels[block] = math.prod(s.stop - s.start for s in plan.core(block))
    task = ImageTask(
        source,
        str(found.path.resolve()),
        found.stem,
        str(job.folder.resolve()),
        job.format,
        json.dumps(plan.fingerprint()),
    )
    return ImageWork(
        str(found.path),
        todo,
        sum(voxels.values()),
        predict_task,
        (task,),
        finish_task,
        before_finish=lambda: record.mark_done(found.stem),
        counts=result.blocks,
        group=functools.partial(box_tasks, plan),
    )
