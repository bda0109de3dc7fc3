"""``bioim2im cellmap predict RUN --crops test_crop_manifest.csv --raw PATTERN``: the test crops predicted
in the challenge's layout.

For each test crop, the raw data of its dataset (``PATTERN`` with ``{dataset}``, e.g.
``data/{dataset}/{dataset}.zarr/recon-1/em/fibsem-uint8``) is read at the model's input scale
over the crop's region plus half a window of context on every side, predicted with sliding
windows (2D models plane by plane), turned into probabilities (sigmoid: CellMap heads have one
independent channel per class), and each class the manifest asks for and the model knows is
brought onto the crop's grid: linear interpolation, then the head's threshold (``> 0.5`` by
default); instance classes are then split into connected components. The rest of the head's
``postprocess`` chain (size filters, watershed, ...) then runs on each class on its crop's grid,
block by block, through the mechanism ``bioim2im cellmap process`` uses (so predicting with a
chain gives what predicting and then ``cellmap process`` with that chain gives); the steps
applied are recorded in the output's root attribute for ``cellmap process``. A chain that does
not start with ``sigmoid`` then ``threshold`` is not applied (its steps would act on the
network's raw output, which may mix classes): the result says so, and each class is then
thresholded at 0.5. The output is a zarr group ``crop<N>/<class>`` (Zarr-2 arrays with
``voxel_size``, ``translation`` and ``shape`` attributes): ``bioim2im cellmap pack`` zips it.

Each crop is predicted in memory (its probabilities at the input scale, one class at a time on
the crop's grid). The output appears only once complete.

``--cluster WHERE`` (as for ``bioim2im predict``: a Dask scheduler's address, ``local[:N]``,
``slurm``, ``lsf`` or ``pbs``, with ``--set cluster.*`` settings) predicts the crops as tasks of
a Dask cluster through :func:`bioim2im.prediction.cluster.run_blocks`, one crop a task: each
worker loads the model once and writes its crops into the unfinished output, which the client
publishes once every crop is written; a crop whose worker died is predicted again elsewhere, to
the same arrays. A run stopped midway starts over (the crops are not recorded one by one).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from bioim2im.errors import UserError
from bioim2im.io.atomic import partial_path, publish, refuse_inputs, remove
from bioim2im.io.multiscale import Level, nearest_level, open_levels
from bioim2im_cellmap.classes import INSTANCE_CLASSES
from bioim2im_cellmap.grids import Grid
from bioim2im_cellmap.layout import NAME, settings
from bioim2im_cellmap.manifest import TestCrop, by_crop, read_manifest

if TYPE_CHECKING:
    from bioim2im.formats.trained_model import TrainedModel


@dataclass
class CropPredictions:
    output: Path
    crops: int = 0
    arrays: int = 0
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def pick(crops: list[TestCrop], only: Collection[str] | None, manifest: str) -> list[TestCrop]:
    """The rows of the crops ``only`` names (``7`` or ``crop7``); all without ``only``."""
    if not only:
        return crops
    known = sorted({row.id for row in crops})
    wanted: set[int] = set()
    for name in only:
        text = name.strip().removeprefix("crop")
        if not text.isdigit() or int(text) not in known:
            shown = ", ".join(str(i) for i in known[:20]) + (", ..." if len(known) > 20 else "")
            raise UserError(f"--only {name!r}: not a crop of {manifest} (its crops: {shown})")
        wanted.add(int(text))
    return [row for row in crops if row.id in wanted]


def predict_crops(
    model_source: str | Path,
    manifest: str | Path,
    raw: str,
    output: str | Path,
    *,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    device: str | None = None,
    instance_classes: Collection[str] = INSTANCE_CLASSES,
    report: Callable[[str], None] | None = None,
    trust_model: bool = False,
    only: Collection[str] | None = None,
    cluster: str | None = None,
) -> CropPredictions:
    """Predict every test crop of ``manifest`` whose classes the model knows (see the module),
    or only the crops ``only`` names (``7`` or ``crop7``). ``trust_model``: as for
    :func:`bioim2im.formats.load_model`. ``cluster``: the crops as tasks of a Dask cluster (see
    the module)."""
    from bioim2im.formats import load_model

    settings_of_cluster = None
    if cluster is not None:
        from bioim2im.prediction import cluster as on_cluster

        on_cluster.check_where(cluster)
        overrides, settings_of_cluster = on_cluster.split_overrides(overrides)
    output = Path(output)
    _check_output(output, overwrite)
    if "{dataset}" not in raw:
        raise UserError(
            f"--raw {raw!r} must hold {{dataset}}, e.g. 'data/{{dataset}}/{{dataset}}.zarr/recon-1/em/fibsem-uint8'"
        )
    crops = pick(read_manifest(manifest), only, str(manifest))
    datasets = sorted({row.dataset for row in crops})
    raws_read = [raw.replace("{dataset}", dataset) for dataset in datasets]
    refuse_inputs(output, [model_source, manifest, *raws_read])
    model = load_model(
        model_source, overrides, device=device or _default_device(), trust_model=trust_model
    )
    preset = model.preset
    if preset.data.layout.name != NAME:
        raise UserError(
            f"{model.checkpoint}: not a CellMap model (its preset's data.layout is "
            f'"{preset.data.layout.name}"); train with data.layout = {{ name = "{NAME}", ... }}'
        )
    classes = list(settings(preset).classes)
    result = CropPredictions(output)
    chain = crop_chain(model)
    if chain.note is not None:
        result.notes.append(chain.note)
    partial = partial_path(output)
    remove(partial)
    root = zarr.open_group(partial, mode="w", zarr_format=2)
    # What its values went through, for `cellmap process` (instance classes are split by
    # connected components right after the threshold).
    root.attrs[MARKER] = {"written_by": WRITTEN_BY, "applied": chain.applied}
    try:
        raws: dict[str, Level] = {}
        chosen: dict[int, list[TestCrop]] = {}
        for crop_id, rows in by_crop(crops).items():
            wanted = [r for r in rows if r.label in classes]
            if not wanted:
                result.skipped.append(
                    f"crop{crop_id}: the model knows none of {', '.join(r.label for r in rows)}"
                )
                continue
            chosen[crop_id] = wanted
        if cluster is not None and settings_of_cluster is not None and chosen:
            task = CropTask(
                _model_source(model_source, overrides, trust_model, model.fingerprint),
                raw,
                str(partial.resolve()),
                tuple(sorted(instance_classes)),
            )
            result.arrays += _on_cluster(task, chosen, cluster, settings_of_cluster, report)
            result.crops += len(chosen)
        for crop_id, wanted in chosen.items() if cluster is None else ():
            result.arrays += _predict_crop(
                model, raw, raws, root, crop_id, wanted, instance_classes
            )
            result.crops += 1
            if report is not None:
                report(_reported(crop_id, wanted))
        if not result.arrays:
            raise UserError(
                f"the model's classes ({', '.join(classes)}) are in none of the crops of {manifest}"
            )
        # Only an earlier output of this command is replaced (checked at the start).
        publish(partial, output, replace_directory=overwrite and written_here(output))
    except BaseException:
        remove(partial)
        raise
    return result


def _predict_crop(
    model: TrainedModel,
    raw: str,
    raws: dict[str, Level],
    root: zarr.Group,
    crop_id: int,
    wanted: Sequence[TestCrop],
    instance_classes: Collection[str],
) -> int:
    """Predict one crop's classes ``wanted`` into ``root``; returns the arrays written."""
    from bioim2im_cellmap.patches import scales

    layout = settings(model.preset)
    classes = list(layout.classes)
    input_scale = np.asarray(scales(layout)[0])
    dataset = wanted[0].dataset
    if dataset not in raws:
        raws[dataset] = nearest_level(open_levels(raw.replace("{dataset}", dataset)), input_scale)
    group = root.require_group(f"crop{crop_id}")
    chain = crop_chain(model)
    arrays = 0
    for grid, members in _by_grid(wanted).items():
        probabilities, first = _predict_region(model, raws[dataset], grid, input_scale)
        for row in members:
            channel = probabilities[classes.index(row.label)]
            level = Level.in_memory(channel, input_scale, first)
            mask = (
                level.sample(grid.translation, grid.voxel_size, grid.shape, order=1, outside=None)
                > chain.threshold
            )
            values = _labelled(mask) if row.label in instance_classes else mask.astype(np.uint8)
            if chain.rest:
                values = chain.run(values, f"crop{crop_id}/{row.label}")
            _write(group, row, grid, values)
            arrays += 1
    return arrays


@dataclass(frozen=True)
class CropChain:
    """How a CellMap model's head's ``postprocess`` chain applies to crop predictions."""

    threshold: float
    """The threshold on each class's probabilities on its crop's grid."""
    rest: list[tuple[str, Any]]
    """The steps after ``sigmoid`` and ``threshold``, built."""
    applied: list[dict[str, Any]]
    """The steps the written values went through, as ``cellmap process`` reads them."""
    output_dtype: str | None
    registry: Any
    note: str | None
    """Said when the chain is not applied."""

    def run(self, values: np.ndarray, where: str) -> np.ndarray:
        """``values`` (one class on its crop's grid) through ``rest``, as ``cellmap process``
        runs them."""
        from bioim2im_cellmap.process import run_chain

        try:
            return run_chain(values, self.rest, self.output_dtype, self.registry)
        except (ValueError, RuntimeError) as exc:
            raise UserError(
                f"{where}: the postprocess chain cannot be applied ({type(exc).__name__}: {exc})"
            ) from None


def crop_chain(model: TrainedModel) -> CropChain:
    """The model's head's chain as crop predictions go through it: ``sigmoid`` (on the
    network's output) and ``threshold`` (on the crop's grid), then the rest, block by block."""
    from bioim2im_cellmap.process import built

    ((name, head),) = model.preset.model.heads.items()
    chain = [{"name": step.name, **step.params()} for step in head.postprocess]
    if [step["name"] for step in chain[:2]] == ["sigmoid", "threshold"]:
        value = float(chain[1].get("value", 0.5))
        rest = built(head.postprocess[2:], model.registry)
        return CropChain(value, rest, chain, head.output_dtype, model.registry, None)
    steps = ", ".join(step["name"] for step in chain) or "none"
    note = (
        f"head '{name}': its postprocess chain ({steps}) is not applied to the crops (it does "
        "not start with sigmoid then threshold); each class is the sigmoid, moved linearly "
        "onto the crop's grid, then > 0.5, instance classes split by connected components"
    )
    return CropChain(0.5, [], [dict(s) for s in APPLIED], None, model.registry, note)


def _reported(crop_id: int, wanted: Sequence[TestCrop]) -> str:
    return f"predicted crop{crop_id} ({wanted[0].dataset}): {', '.join(r.label for r in wanted)}"


# ---------------------------------------------------------------------------------------------
# --cluster: one crop a task (the mechanism: bioim2im.prediction.cluster.run_blocks)


@dataclass(frozen=True)
class CropTask:
    """What a worker needs to predict crops: the model, the raw data, the unfinished output."""

    source: Any
    """The model as the client loaded it (a :class:`bioim2im.prediction.cluster.ModelSource`)."""
    raw: str
    partial: str
    instance_classes: tuple[str, ...]


_raws: dict[str, dict[str, Level]] = {}
"""Per raw pattern, each dataset's level opened in this worker process."""


def crop_task(
    task: CropTask,
    crops: tuple[tuple[int, tuple[TestCrop, ...]], ...],
    run: int,
    chosen: tuple[int, ...],
) -> tuple[int, int]:
    """A task: predict crops ``chosen`` (indices into ``crops``; ``run`` is always 0) into the
    unfinished output;
    returns (0, arrays written). A crop predicted again (its worker died) is written again."""
    from bioim2im.prediction import cluster as on_cluster

    with on_cluster.TASK_LOCK:
        crop_id = crops[chosen[0]][0]
        try:
            model = on_cluster.loaded_model(task.source)
            root = zarr.open_group(task.partial, mode="r+", zarr_format=2)
            arrays = 0
            for index in chosen:
                crop_id, wanted = crops[index]
                arrays += _predict_crop(
                    model,
                    task.raw,
                    _raws.setdefault(task.raw, {}),
                    root,
                    crop_id,
                    wanted,
                    task.instance_classes,
                )
            return 0, arrays
        except Exception as exc:
            cause = exc.message if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            raise on_cluster.BlockFailed(
                f"crop{crop_id}: {cause}", isinstance(exc, OSError)
            ) from exc


def _model_source(
    given: str | Path, overrides: Sequence[str], trust: bool, fingerprint: str
) -> Any:
    from bioim2im.prediction.cluster import ModelSource

    text = str(given)
    return ModelSource(
        text if "://" in text else str(Path(text).resolve()), tuple(overrides), trust, fingerprint
    )


def _on_cluster(
    task: CropTask,
    chosen: dict[int, list[TestCrop]],
    where: str,
    settings: Any,
    report: Callable[[str], None] | None,
) -> int:
    """Predict the crops ``chosen`` on the cluster ``where``; returns the arrays written."""
    from bioim2im.prediction import cluster as on_cluster

    crops = tuple((crop_id, tuple(rows)) for crop_id, rows in chosen.items())
    voxels = sum(int(np.prod(rows[0].shape)) for rows in chosen.values())
    work = on_cluster.ImageWork(
        "the test crops",
        {0: list(range(len(crops)))},
        voxels,
        crop_task,
        (task, crops),
        group=lambda todo, size: [(index,) for index in todo],
    )
    with on_cluster.connect(where, settings, report) as connection:
        on_cluster.run_blocks(connection, [work], settings, None)
    if report is not None:
        for crop_id, wanted in chosen.items():
            report(_reported(crop_id, wanted))
    return sum(len(rows) for rows in chosen.values())


MARKER = "bioim2im"
"""The root attribute that marks a zarr group as written by ``cellmap predict`` (its value
names the command as it was first called)."""
WRITTEN_BY = "predict --crops"
WRITERS = (WRITTEN_BY, "process")
"""The commands whose output ``--overwrite`` may replace."""
APPLIED: list[dict[str, str | float]] = [{"name": "sigmoid"}, {"name": "threshold", "value": 0.5}]
"""The postprocessing steps equivalent to what ``cellmap predict`` applies."""


def written_here(path: Path) -> bool:
    """Whether ``path`` is a zarr group ``cellmap predict`` or ``cellmap process`` wrote (the
    only folders their ``--overwrite`` replaces)."""
    import json

    attributes = path / ".zattrs"
    if path.is_symlink() or not path.is_dir() or not attributes.is_file():
        return False
    try:
        found = json.loads(attributes.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    mark = found.get(MARKER) if isinstance(found, dict) else None
    return isinstance(mark, dict) and mark.get("written_by") in WRITERS


def _check_output(output: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output that exists unless it is an earlier output of this
    command and ``overwrite`` says to replace it."""
    if not (output.exists() or output.is_symlink()):
        in_the_way = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
        if in_the_way is not None:
            raise UserError(f"--output {output}: {in_the_way} is a file, not a folder")
        return
    if not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    if not written_here(output):
        raise UserError(
            f"--overwrite replaces only the output of an earlier `bioim2im cellmap predict`, "
            f"and {output} is not one; nothing was changed (choose another --output)"
        )


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _by_grid(rows: Sequence[TestCrop]) -> dict[Grid, list[TestCrop]]:
    grids: dict[Grid, list[TestCrop]] = {}
    for row in rows:
        grids.setdefault(Grid(row.voxel_size, row.translation, row.shape), []).append(row)
    return grids


def _predict_region(
    model: TrainedModel, raw: Level, grid: Grid, scale: np.ndarray
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Probabilities (C, Z, Y, X) at the input scale over the crop plus context, and the centre of
    their first voxel (nm)."""
    from bioim2im.data.preparation import preparation
    from bioim2im.prediction.blockwise import predict_array

    preset = model.preset
    roi = list(model.roi_size)
    roi3 = [1] * (3 - len(roi)) + roi
    low = np.asarray(grid.translation) - np.asarray(grid.voxel_size) / 2
    high = low + np.asarray(grid.shape) * np.asarray(grid.voxel_size)
    # The input grid: on the raw level's voxels when it has the input scale, half a window of
    # context beyond the crop on every side.
    margin = np.asarray([r // 2 for r in roi3])
    first = low + scale / 2 - margin * scale
    if np.allclose(raw.scale, scale, rtol=0.01):
        first = (
            np.asarray(raw.translation)
            + np.floor((first - np.asarray(raw.translation)) / scale) * scale
        )
    count = np.ceil((high + margin * scale - (first - scale / 2)) / scale).astype(int)
    count = np.maximum(count, roi3)
    image = raw.sample(first, scale, count, order=1).astype(np.float32)[None]
    normalize = preparation(preset, model.registry).normalize
    image = normalize(image)
    (head,) = preset.model.heads
    channels = preset.model.heads[head].out_channels
    predict = preset.predict
    options: dict[str, Any] = {
        "roi_size": roi,
        "out_channels": {head: channels},
        "overlap": predict.overlap,
        "blend": predict.blend,
        "batch_size": predict.batch_size,
        "device": model.device,
        "amp_dtype": model.amp_dtype,
    }
    if len(roi) == 3:
        logits = predict_array(model.network, image, **options)[head]
    else:
        planes = [
            predict_array(model.network, image[:, z], **options)[head]
            for z in range(image.shape[1])
        ]
        logits = np.stack(planes, axis=1)
    probabilities = 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))
    return probabilities.astype(np.float32), tuple(float(v) for v in first)


def _labelled(mask: np.ndarray) -> np.ndarray:
    """An instance class's mask split into connected components (touching at corners too)."""
    from skimage.measure import label

    return np.asarray(label(mask, connectivity=mask.ndim)).astype(np.uint32)


def _write(group: zarr.Group, row: TestCrop, grid: Grid, values: np.ndarray) -> None:
    array = group.create_array(
        row.label,
        shape=values.shape,
        dtype=values.dtype,
        chunks=tuple(min(n, 64) for n in values.shape),
        overwrite=True,  # a crop predicted again (its worker died) is written again
    )
    array[...] = values
    # The crop's grid as `pack` checks it: finite numbers (the Grid refuses others).
    array.attrs.update(
        voxel_size=[float(v) for v in grid.voxel_size],
        translation=[float(v) for v in grid.translation],
        shape=[int(n) for n in grid.shape],
    )
