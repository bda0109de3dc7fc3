"""Postprocess saved predictions without the network: the engine of ``bioim2im postprocess``.

``bioim2im postprocess RUN_DIR --input PREDICTIONS --output FOLDER [--set
model.heads.NAME.postprocess=[...]]`` runs a head's postprocessing steps over predictions saved
earlier (say probabilities, from ``predict`` with ``postprocess = [{ name = "sigmoid" }]``), so
thresholds or watershed settings can be tried on a large volume without predicting it again.

What the steps start from. ``predictions.csv`` (written by ``predict``, and by this command)
records, per output, the steps it went through. The chain run here is the head's
``postprocess`` in the run's preset after ``--set``; the steps the saved values already went
through must be its first ones, and are skipped: saved ``[sigmoid]`` and a chain ``[sigmoid,
watershed]`` run the watershed. Image files given without a ``predictions.csv`` are taken as
the head's raw output (logits): the whole chain runs on them, so for probabilities saved by
other means give the chain without its activation. Integer outputs of a chain that ends in
probabilities (``output_dtype = "uint8"``) are scaled back to [0, 1].

How. As ``predict`` does after its network: block by block, the steps that map each voxel on
its own (threshold...) on each block, in one pass whose finished blocks are recorded, so an
interrupted run resumes; then the steps that need neighbours (connected components, watershed,
size filters) on blocks with a halo of one prediction window, object ids stitched across
blocks. Memory depends on the block size, not on the image. Outputs have ``predict``'s layout,
appear only when complete, and get a ``predictions.csv`` that records the whole chain.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bioim2im.errors import UserError
from bioim2im.formats.trained_model import HeadOutput
from bioim2im.io.atomic import output_lock, refuse_inputs
from bioim2im.io.images import SPATIAL, InputImage
from bioim2im.io.ngff import inside_store
from bioim2im.prediction.image import CHUNKS, _postprocess_with_halo, _stitch_labels, output_origin
from bioim2im.prediction.outputs import (
    FORMATS,
    TABLE,
    ImageSpec,
    Outputs,
    RunRecord,
    Store,
    WorkDir,
    write_table,
)
from bioim2im.userfiles import MAX_TABLE_BYTES, read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from bioim2im.config.schema import ClusterConfig, HeadConfig, Preset
    from bioim2im.plugin.registry import ComponentRegistry
    from bioim2im.prediction.blockwise import BlockPlan

__all__ = ["PostprocessPlan", "PostprocessSummary", "plan_postprocess", "postprocess_files"]


@dataclass
class _Saved:
    """One saved head output to postprocess."""

    stem: str
    head: str
    path: Path
    applied: list[dict[str, Any]]
    """The steps its values already went through."""
    table: Path | None = None
    """The predictions.csv that listed it."""
    image: InputImage | None = None
    output: HeadOutput | None = None
    chain: list[dict[str, Any]] | None = None
    """Every step, those applied and those run here."""
    unscale: float = 1.0
    plan: BlockPlan | None = None
    halo: tuple[int, ...] = ()


@dataclass
class PostprocessSummary:
    """What ``postprocess_files`` wrote."""

    outputs: list[Path]
    table: Path
    resumed_blocks: int
    blocks: int


def postprocess_files(
    model: str | Path,
    inputs: str | Path,
    output: str | Path,
    *,
    overrides: Sequence[str] = (),
    heads: Sequence[str] = (),
    format: str | None = None,
    overwrite: bool = False,
    report: Callable[[str], None] | None = None,
    cluster: str | None = None,
) -> PostprocessSummary:
    """Run the heads' postprocessing over saved predictions into ``output``; see the module
    docstring. ``heads`` restricts it to those heads. ``cluster`` runs the blocks as tasks of a
    Dask cluster, as ``predict --cluster`` does (:mod:`bioim2im.prediction.cluster`)."""
    settings = None
    if cluster is not None:
        from bioim2im.prediction import cluster as on_cluster

        on_cluster.check_where(cluster)
        overrides, settings = on_cluster.split_overrides(overrides)
    plan = plan_postprocess(model, inputs, output, overrides, heads, format)
    folder, outputs, by_stem = plan.folder, plan.outputs, plan.by_stem
    total = resumed = 0
    with output_lock(folder):  # one command writes there at a time
        record = RunRecord(folder, plan.fingerprint)
        _decide(outputs, by_stem, record, overwrite)
        if cluster is not None and settings is not None:
            resumed, total = postprocess_on_cluster(plan, record, cluster, settings, report)
        else:
            for stem, items in by_stem.items():
                done, count = _postprocess_one(outputs[stem], items, plan.preset, record, report)
                resumed, total = resumed + done, total + count
        write_table(folder, [_row(folder, outputs[s.stem], s) for s in plan.saved])
        record.close()
    published = [p for o in outputs.values() for p in o.published]
    return PostprocessSummary(published, folder / TABLE, resumed, total)


@dataclass
class PostprocessPlan:
    """What one ``postprocess`` command does: the saved outputs, their chains and blocks, and
    where the results go."""

    model: str
    """The checkpoint (absolute)."""
    overrides: tuple[str, ...]
    inputs: str
    heads: tuple[str, ...]
    format: str
    folder: Path
    preset: Preset
    saved: list[_Saved]
    by_stem: dict[str, list[_Saved]]
    outputs: dict[str, Outputs]
    fingerprint: str

    def store(self, stem: str) -> Store:
        """``stem``'s results: created by the first call, opened by later ones."""
        settings = self.preset.predict
        return self.outputs[stem].open_store(
            {item.head: _spec(item) for item in self.by_stem[stem]},
            zarr_format=settings.zarr_format,
            pyramid_levels=settings.pyramid_levels,
        )

    def start(self, stem: str) -> WorkDir:
        """``stem``'s work directory, started (a run of other settings there is discarded)."""
        work = WorkDir(self.outputs[stem].work_dir)
        fingerprint = _stem_fingerprint(self.by_stem[stem])
        work.start(fingerprint, fresh=work.state(fingerprint) == "other")
        return work


def plan_postprocess(
    model: str | Path,
    inputs: str | Path,
    output: str | Path,
    overrides: Sequence[str] = (),
    heads: Sequence[str] = (),
    format: str | None = None,
) -> PostprocessPlan:
    """Check everything and plan the command (nothing is written)."""
    checkpoint, preset, registry = _run_preset(model, overrides)
    folder = Path(output)
    chosen = format or preset.predict.format
    if chosen not in FORMATS:
        raise UserError(f"--format {chosen!r}: choose one of {', '.join(FORMATS)}")
    in_the_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise UserError(f"--output {folder}: {in_the_way} is a file; give a folder for the results")
    saved = _find_saved(Path(inputs), preset, registry, heads)
    # The results are none of what they are computed from, nor inside it, nor hold it.
    tables = [item.table for item in saved if item.table is not None]
    refuse_inputs(folder, [model, *(item.path for item in saved), *tables])
    problems = []
    for item in saved:
        try:
            _prepare(item, preset, registry)
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError(f"{len(problems)} of the inputs cannot be postprocessed:", problems)
    by_stem: dict[str, list[_Saved]] = {}
    for item in saved:
        same = [s for s in by_stem.get(item.stem, []) if s.head == item.head]
        if same:
            raise UserError(
                f"{same[0].path} and {item.path} would both write {item.stem}'s {item.head}; "
                "postprocess them into separate folders"
            )
        by_stem.setdefault(item.stem, []).append(item)
    fingerprint = _digest(checkpoint, chosen, *(_fingerprint(s) for s in saved))
    outputs = {
        stem: Outputs(
            folder,
            stem,
            tuple(s.head for s in items),
            chosen,
            tuple(s.head for s in items if s.output is not None and s.output.is_label),
        )
        for stem, items in by_stem.items()
    }
    return PostprocessPlan(
        checkpoint,
        tuple(overrides),
        str(Path(inputs).absolute()),
        tuple(heads),
        chosen,
        folder,
        preset,
        saved,
        by_stem,
        outputs,
        fingerprint,
    )


def finished_blocks(work: WorkDir, item: _Saved, t: int) -> set[int]:
    """The blocks of ``item`` at time point ``t`` recorded as done (by any process)."""
    from bioim2im.prediction.blockwise import load_finished_blocks

    assert item.plan is not None
    record = {**item.plan.fingerprint(), "time_point": t, "head": item.head}
    finished: set[int] = set()
    for path in sorted((work.path / "progress").glob(f"{item.head}-t{t:05d}*.json")):
        finished |= load_finished_blocks(path, record)
    return finished


def pointwise_blocks(
    work: WorkDir, item: _Saved, store: Store, t: int, blocks: Sequence[int], name: str = ""
) -> tuple[int, int]:
    """The pointwise steps on ``blocks`` of ``item`` at ``t`` not recorded yet, each recorded
    (in the progress file ``name``) once written; returns (skipped, done)."""
    from bioim2im.prediction.blockwise import BlockProgress

    assert item.plan is not None
    finished = finished_blocks(work, item, t)
    todo = [b for b in blocks if b not in finished]
    if todo:
        record = {**item.plan.fingerprint(), "time_point": t, "head": item.head}
        suffix = f"-{name}" if name else ""
        progress = BlockProgress(
            work.path / "progress" / f"{item.head}-t{t:05d}{suffix}.json", record
        )
        for index in todo:
            _pointwise_block(item, store, t, item.plan.core(index))
            progress.mark_done(index)
    return len(blocks) - len(todo), len(todo)


def finish_stem(items: Sequence[_Saved], store: Store) -> None:
    """The neighbourhood steps of every head of one input, then publish."""
    for item in items:
        _neighbourhood(item, store)
    store.finish()


# ---------------------------------------------------------------------------------------------
# The run's preset and the saved outputs


def _run_preset(
    model: str | Path, overrides: Sequence[str]
) -> tuple[str, Preset, ComponentRegistry]:
    """The run's preset (from its checkpoint, with tuned settings) after ``overrides``; no
    network is built."""
    from bioim2im.config.loading import apply_override, validate
    from bioim2im.model.checkpoint import checkpoint_path, load_checkpoint
    from bioim2im.plugin.manager import get_registry

    path = checkpoint_path(model)
    state = load_checkpoint(path)
    if not isinstance(state.get("preset"), str):
        raise UserError(f"{path}: the checkpoint lacks its preset")
    try:
        data = tomllib.loads(state["preset"])
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: the checkpoint's preset is not valid TOML: {exc}") from None
    for text in overrides:
        data = apply_override(data, text)
    registry = get_registry()
    preset = validate(data, registry, f"the preset of checkpoint {path}")
    return str(path.resolve()), preset, registry


def _find_saved(
    inputs: Path, preset: Preset, registry: ComponentRegistry, heads: Sequence[str]
) -> list[_Saved]:
    known = list(preset.model.heads)
    unknown = [h for h in heads if h not in known]
    if unknown:
        raise UserError(
            f"--head {unknown[0]!r} is not a head of the run (heads: {', '.join(known)})"
        )
    # Whatever is there under the table's name is read as one (a FIFO is refused, not skipped).
    table = inputs if inputs.name == TABLE and not inputs.is_dir() else inputs / TABLE
    if table.exists() and not table.is_dir():
        saved = _from_table(table, known)
    else:
        saved = _from_files(inputs, preset, registry, heads)
    saved = [s for s in saved if not heads or s.head in heads]
    if not saved:
        raise UserError(f"{inputs}: no outputs of the heads {', '.join(heads or known)} listed")
    return saved


def _from_table(table: Path, known: Sequence[str]) -> list[_Saved]:
    """The outputs ``predictions.csv`` lists, with the steps each went through."""
    try:
        text = read_text(table, what="prediction table", limit=MAX_TABLE_BYTES)
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except (OSError, csv.Error) as exc:
        raise UserError(f"cannot read {table}: {exc}") from None
    saved = []
    for line, row in enumerate(rows, start=2):
        head, output = row.get("head") or "", row.get("output") or ""
        if head not in known:
            raise UserError(
                f"{table} line {line}: head {head!r} is not a head of the run "
                f"(heads: {', '.join(known)}); were these predictions made with another run?"
            )
        try:
            applied = json.loads(row.get("postprocess") or "[]")
        except (ValueError, RecursionError):  # RecursionError: lists nested thousands deep
            applied = None
        if not isinstance(applied, list) or not all(isinstance(s, dict) for s in applied):
            raise UserError(f"{table} line {line}: the postprocess column is not a list of steps")
        outside = inside_store(output, f"the folder of {table.name}")
        if outside is not None:
            raise UserError(f"{table} line {line}: output: {outside}")
        path = table.parent / output
        saved.append(_Saved(_stem(path, head), head, path, applied, table))
    return saved


def _stem(output: Path, head: str) -> str:
    """The input's name in an output path of ``predict``'s layout."""
    container = output.parent.parent if output.parent.name == "labels" else output.parent
    if container.name.endswith(".ome.zarr"):
        return container.name.removesuffix(".ome.zarr")
    return output.name.split(".")[0].removesuffix(f"_{head}")


def _from_files(
    inputs: Path, preset: Preset, registry: ComponentRegistry, heads: Sequence[str]
) -> list[_Saved]:
    """Image files without a record: the head's raw output."""
    from bioim2im.data.sources import image_stem
    from bioim2im.prediction.inputs import find_inputs

    known = list(preset.model.heads)
    if len(heads) != 1 and len(known) != 1:
        raise UserError(
            f"{inputs} has no {TABLE} saying which head made it: choose one with --head "
            f"({', '.join(known)})"
        )
    head = heads[0] if heads else known[0]
    suffixes = sorted(
        {s.lower() for c in registry if c.kind == "reader" for s in c.extras.get("suffixes", ())},
        key=len,
        reverse=True,
    )
    inside_zarr = any(p.suffix == ".zarr" for p in (inputs, *inputs.parents))
    paths = [inputs] if inside_zarr and inputs.exists() else []
    paths = paths or find_inputs(str(inputs), manifest_column="path", suffixes=suffixes)
    saved = []
    for path in paths:
        container = next((p for p in (path, *path.parents) if p.suffix == ".zarr"), path)
        stem = image_stem(container, suffixes) or container.stem
        saved.append(_Saved(stem, head, path, []))
    return saved


# ---------------------------------------------------------------------------------------------
# What runs on each output


def _prepare(item: _Saved, preset: Preset, registry: ComponentRegistry) -> None:
    """Open ``item``, decide the steps to run, how values are read and how blocks are cut."""
    from bioim2im.io import open_image

    config = preset.model.heads[item.head]
    chain = [{"name": step.name, **step.params()} for step in config.postprocess]
    if item.applied != chain[: len(item.applied)]:
        raise UserError(
            f"{item.path}: its values went through model.heads.{item.head}.postprocess = "
            f"{_names(item.applied)}, but the chain to run is {_names(chain)}; give a chain "
            f"that starts with those steps (they are skipped), e.g. --set "
            f"'model.heads.{item.head}.postprocess=[...]'"
        )
    todo = config.postprocess[len(item.applied) :]
    if not todo:
        raise UserError(
            f"{item.path}: nothing to do: model.heads.{item.head}.postprocess is "
            f"{_names(chain)}, and its values went through all of it; give more steps with "
            f"--set 'model.heads.{item.head}.postprocess=[...]'"
        )
    try:
        image = open_image(item.path, registry=registry)
    except UserError as exc:
        raise UserError(f"{item.path}: {exc}") from None
    found = InputImage(item.path, item.stem, image)
    if "S" in image.axes or len(found.spatial) not in (2, 3):
        raise UserError(f"{item.path}: axes {image.axes}: expected (T)C(Z)YX as predict writes")
    item.image = found
    item.chain = chain
    item.output = _head_output(item.head, config, todo, found.channels, registry, found.spatial)
    applied = config.postprocess[: len(item.applied)]
    if applied and image.dtype.kind == "u" and _made_floats(applied, registry, config.out_channels):
        item.unscale = float(np.iinfo(image.dtype).max)  # probabilities written as integers
    dims = len(found.spatial)
    # One prediction window of halo, as predict gives the steps that need neighbours.
    window = preset.predict.roi_size or preset.data.patch_size
    roi = tuple(window[-dims:]) if len(window) >= dims else (max(window),) * dims
    item.halo = tuple(min(r, n) for r, n in zip(roi, found.spatial_shape, strict=True))
    item.plan = _plan(found, item.halo, preset.predict.block_size)


def _names(steps: Sequence[dict[str, Any]]) -> str:
    return "[" + ", ".join(str(s.get("name")) for s in steps) + "]"


def _made_floats(steps: Sequence[Any], registry: ComponentRegistry, channels: int) -> bool:
    from bioim2im.formats.trained_model import run_steps

    probe = np.zeros((channels, 8, 8), np.float32)
    built = [registry.build("postprocessor", step) for step in steps]
    return run_steps(built, probe).dtype.kind == "f"


def _head_output(
    name: str,
    config: HeadConfig,
    steps: Sequence[Any],
    channels: int,
    registry: ComponentRegistry,
    spatial: str,
) -> HeadOutput:
    """Like prediction's, for the steps run here on ``channels`` saved channels."""
    from bioim2im.formats.trained_model import chain_output
    from bioim2im.prediction.blockwise import HeadGeometry

    built = [(spec.name, registry.build("postprocessor", spec)) for spec in steps]
    geometry = HeadGeometry.same(len(spatial))
    try:
        return chain_output(name, channels, geometry, built, config.output_dtype, registry)
    except (ValueError, IndexError) as exc:
        raise UserError(
            f"model.heads.{name}.postprocess cannot run on {channels} saved channel(s): {exc}"
        ) from None


def _plan(found: InputImage, halo: tuple[int, ...], block_size: Sequence[int] | None) -> BlockPlan:
    """Blocks of ``predict.block_size`` (default: a few chunks per axis) on output chunk
    borders; chunks of the writer's default size, or of the block when that is smaller."""
    from bioim2im.prediction.blockwise import plan_blocks
    from bioim2im.prediction.blockwise.blocks import default_block_size

    shape = found.spatial_shape
    defaults = CHUNKS[len(shape)]
    size = tuple(block_size) if block_size else default_block_size(defaults)
    chunks = tuple(max(1, min(c, b, n)) for c, b, n in zip(defaults, size, shape, strict=True))
    return plan_blocks(shape, halo, 0.0, size, chunks)


def _chunks(plan: BlockPlan) -> tuple[int, ...]:
    """The output chunks of ``plan``: its blocks are whole chunks, at most the default size."""
    defaults = CHUNKS[len(plan.shape)]
    return tuple(max(1, min(c, b)) for c, b in zip(defaults, plan.block_size, strict=True))


def _spec(item: _Saved) -> ImageSpec:
    assert item.image is not None and item.output is not None and item.plan is not None
    found, head = item.image, item.output
    timed = "T" in found.axes
    chunks = _chunks(item.plan)
    return ImageSpec(
        shape=((found.time_points,) if timed else ()) + (head.channels, *found.spatial_shape),
        axes=("T" if timed else "") + "C" + found.spatial,
        dtype=head.dtype,
        chunks=((1,) if timed else ()) + (1, *chunks),
        voxel_size=found.voxel_size,
        is_label=head.is_label,
        blockwise_channels=head.blockwise_channels if head.neighbourhood else None,
        blockwise_dtype=head.blockwise_dtype,
        origin=output_origin(found, head.geometry),
    )


def _fingerprint(item: _Saved) -> str:
    assert item.image is not None and item.plan is not None and item.output is not None
    stat = item.path.stat()
    return _digest(
        str(item.path.resolve()),
        str(stat.st_mtime_ns),
        str(item.image.image.shape),
        str(item.image.image.dtype),
        json.dumps(item.chain),
        str(item.output.dtype),
        json.dumps(item.plan.fingerprint()),
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Running it


def _decide(
    outputs: dict[str, Outputs],
    by_stem: dict[str, list[_Saved]],
    record: RunRecord,
    overwrite: bool,
) -> None:
    """Refuse outputs in the way (finished ones, another command's unfinished ones), all at
    once, unless ``overwrite``."""
    problems = []
    for stem, target in outputs.items():
        if stem in record.done:
            continue
        existing = target.finished()
        if existing and not overwrite:
            problems.append(f"{', '.join(map(str, existing))} exists")
        state = WorkDir(target.work_dir).state(_stem_fingerprint(by_stem[stem]))
        if state == "other" and not overwrite:
            problems.append(f"{target.work_dir} holds an unfinished run of other settings")
    if problems:
        raise UserError("outputs are in the way (use --overwrite to replace them):", problems)


def _stem_fingerprint(items: Sequence[_Saved]) -> str:
    return _digest(*(_fingerprint(s) for s in items))


def _postprocess_one(
    target: Outputs,
    items: list[_Saved],
    preset: Preset,
    record: RunRecord,
    report: Callable[[str], None] | None,
) -> tuple[int, int]:
    """Every head of one input: pointwise steps block by block (recorded, resumable), then the
    neighbourhood steps; publish. Returns (blocks done by an earlier run, blocks)."""
    if target.stem in record.done and len(target.finished()) == len(target.published):
        return 0, 0
    work = WorkDir(target.work_dir)
    fingerprint = _stem_fingerprint(items)
    work.start(fingerprint, fresh=work.state(fingerprint) == "other")
    settings = preset.predict
    store = target.open_store(
        {item.head: _spec(item) for item in items},
        zarr_format=settings.zarr_format,
        pyramid_levels=settings.pyramid_levels,
    )
    resumed = total = 0
    for item in items:
        assert item.image is not None and item.plan is not None and item.output is not None
        for t in range(item.image.time_points):
            done, _ = pointwise_blocks(work, item, store, t, range(len(item.plan)))
            resumed += done
            total += len(item.plan)
    if report is not None:
        report(
            f"{target.stem}: {total - resumed} blocks"
            + (f", {resumed} done earlier" if resumed else "")
        )
    record.mark_done(target.stem)
    finish_stem(items, store)
    return resumed, total


def _pointwise_block(item: _Saved, store: Store, t: int, core: tuple[slice, ...]) -> None:
    assert item.image is not None and item.output is not None
    head = item.output
    values = _read(item.image, t, core)
    if item.unscale != 1.0:
        values = values / item.unscale
    values = head.run_pointwise(values)
    if head.neighbourhood:
        store.write_blockwise(item.head, t, core, values)
    else:
        store.write(item.head, t, core, head.to_output(values))


def _read(found: InputImage, t: int, region: tuple[slice, ...]) -> np.ndarray:
    """``region`` (spatial, ZYX order) of time point ``t`` as float32 (C, *spatial)."""
    view = found.at(t)
    by_letter = dict(zip(found.spatial, region, strict=True))
    index = tuple(by_letter.get(a, slice(None)) for a in view.axes)
    data = view.read(index)
    spatial = [view.axes.index(a) for a in SPATIAL if a in view.axes]
    other = [a for a in range(data.ndim) if a not in spatial]
    data = data.transpose(*other, *spatial)
    return data.reshape(-1, *data.shape[len(other) :]).astype(np.float32, copy=False)


def _neighbourhood(item: _Saved, store: Store) -> None:
    assert item.image is not None and item.plan is not None and item.output is not None
    head, plan = item.output, item.plan
    if not head.neighbourhood:
        return
    cores = [plan.core(i) for i in range(len(plan))]
    for t in range(item.image.time_points):
        values = store.blockwise(item.head, t)
        if head.instance:
            _stitch_labels(item.head, head, store, t, values, cores, item.halo)
        else:
            _postprocess_with_halo(item.head, head, store, t, values, cores, item.halo)


def _row(folder: Path, target: Outputs, item: _Saved) -> dict[str, str]:
    spec = _spec(item)
    return {
        "input": str(item.path.resolve()),
        "head": item.head,
        "output": target.path(item.head).relative_to(folder).as_posix(),
        "axes": spec.axes,
        "shape": "x".join(map(str, spec.shape)),
        "dtype": str(spec.dtype),
        "postprocess": json.dumps(item.chain),
    }


# ---------------------------------------------------------------------------------------------
# bioim2im postprocess --cluster (the mechanism: bioim2im.prediction.cluster)


@dataclass(frozen=True)
class PostprocessSpec:
    """How a worker plans the same ``postprocess`` command as the client."""

    model: str
    overrides: tuple[str, ...]
    inputs: str
    folder: str
    heads: tuple[str, ...]
    format: str
    fingerprint: str
    """The client's plan: a worker that plans another (the files changed) stops."""


_postprocess_plans: dict[PostprocessSpec, Any] = {}
_postprocess_stores: dict[tuple[PostprocessSpec, str], Store] = {}


def _postprocess_plan(spec: PostprocessSpec) -> Any:
    """The command's plan, made once per worker process."""
    if spec not in _postprocess_plans:
        _postprocess_plans.clear()
        _postprocess_stores.clear()
        plan = plan_postprocess(
            spec.model, spec.inputs, spec.folder, spec.overrides, spec.heads, spec.format
        )
        if plan.fingerprint != spec.fingerprint:
            raise UserError(
                f"{spec.inputs}: a worker found other saved predictions or another run than the "
                "client (were they changed, or does the worker see other files at that path?)"
            )
        _postprocess_plans[spec] = plan
    return _postprocess_plans[spec]


def postprocess_task(
    spec: PostprocessSpec, run: tuple[str, str, int], blocks: tuple[int, ...]
) -> tuple[int, int]:
    """A task: the pointwise steps on ``blocks`` of one head (``run``: stem, head, time
    point); returns (blocks recorded before, blocks done)."""
    from bioim2im.prediction import cluster as on_cluster

    stem, head, t = run
    with on_cluster.TASK_LOCK:
        item = None
        try:
            plan = _postprocess_plan(spec)
            item = next(i for i in plan.by_stem[stem] if i.head == head)
            if (spec, stem) not in _postprocess_stores:
                _postprocess_stores[spec, stem] = plan.store(stem)
            work = WorkDir(plan.outputs[stem].work_dir)
            return pointwise_blocks(
                work, item, _postprocess_stores[spec, stem], t, blocks, f"dask-b{blocks[0]:08d}"
            )
        except Exception as exc:
            where = f"{spec.inputs}: {stem} {head}, blocks {blocks[0]} to {blocks[-1]}"
            if item is not None and item.plan is not None:
                done: set[int] = set()
                with contextlib.suppress(OSError, ValueError):
                    done = finished_blocks(WorkDir(plan.outputs[stem].work_dir), item, t)
                block = next((b for b in blocks if b not in done), blocks[0])
                region = ", ".join(f"{s.start}:{s.stop}" for s in item.plan.core(block))
                where = f"{item.path}: block {block} (voxels {region})"
            cause = exc.message if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            raise on_cluster.BlockFailed(f"{where}: {cause}", isinstance(exc, OSError)) from exc


def postprocess_finish_task(spec: PostprocessSpec, stem: str) -> None:
    """A task: the neighbourhood steps of every head of ``stem``, then publish."""
    from bioim2im.prediction import cluster as on_cluster

    with on_cluster.TASK_LOCK:
        plan = _postprocess_plan(spec)
        store = _postprocess_stores.pop((spec, stem), None) or plan.store(stem)
        finish_stem(plan.by_stem[stem], store)


def postprocess_on_cluster(
    plan: PostprocessPlan,
    record: Any,
    where: str,
    settings: ClusterConfig,
    report: Callable[[str], None] | None,
) -> tuple[int, int]:
    """``postprocess --cluster``: the pointwise steps of every block as tasks, then each
    input's neighbourhood steps and publishing as a task. Returns (blocks done by an earlier
    run, blocks)."""
    from bioim2im.prediction import cluster as on_cluster

    spec = PostprocessSpec(
        plan.model,
        plan.overrides,
        plan.inputs,
        str(plan.folder.resolve()),
        plan.heads,
        plan.format,
        plan.fingerprint,
    )
    works, resumed, total = [], 0, 0
    for stem, items in plan.by_stem.items():
        target = plan.outputs[stem]
        if stem in record.done and len(target.finished()) == len(target.published):
            continue
        work = plan.start(stem)
        plan.store(stem)  # creates the images; the workers open them
        todo: dict[Any, list[int]] = {}
        voxels = 0
        for item in items:
            assert item.image is not None and item.plan is not None
            blocks = item.plan
            for t in range(item.image.time_points):
                finished = _finished_postprocess(work, item, t)
                left = [b for b in range(len(blocks)) if b not in finished]
                resumed += len(blocks) - len(left)
                total += len(blocks)
                for b in left:
                    voxels += math.prod(s.stop - s.start for s in blocks.core(b))
                if left:
                    todo[stem, item.head, t] = left
        works.append(
            on_cluster.ImageWork(
                stem,
                todo,
                voxels,
                postprocess_task,
                (spec,),
                functools.partial(postprocess_finish_task, stem=stem),
                before_finish=functools.partial(record.mark_done, stem),
            )
        )
    if works:
        with on_cluster.connect(where, settings, report) as connection:
            on_cluster.run_blocks(connection, works, settings, None)
    return resumed, total


def _finished_postprocess(work: Any, item: Any, t: int) -> set[int]:
    return finished_blocks(work, item, t)
