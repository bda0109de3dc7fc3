"""``bioim2im cellmap process RUN --input PREDICTIONS.zarr --output PROCESSED.zarr``: a head's
postprocessing chain over crop predictions (the toolbox's ``csc process``).

The input is a zarr group of ``crop<N>/<class>`` arrays, e.g. what ``bioim2im cellmap predict``
writes; each array is one class's values on its crop's grid. The chain run is the head's
``postprocess`` in the run's preset after ``--set`` (thresholds, size filters, watershed, ...),
on each array as one channel. Steps the values already went through are skipped: ``cellmap
predict`` records them (``sigmoid`` and ``threshold``, and the rest of the chain it was given),
so its output gets the rest of the chain; arrays without that record are taken as the head's raw
output (logits) and get the whole chain. ``cellmap predict`` runs the chain on each class it
predicts through :func:`run_chain` too.

Block by block, as ``bioim2im postprocess`` does: the steps that map each voxel on its own run on
each block; the steps that need neighbours run on blocks with a halo of one block, and object
ids are stitched across blocks when they number objects. The output has the input's layout and
attributes (``voxel_size``, ``translation``), so ``bioim2im cellmap pack`` takes it, and appears
only once complete.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from bioim2im.errors import UserError
from bioim2im.io.atomic import partial_path, publish, refuse_inputs, remove

APPLIED = "applied"
"""The key, in the ``bioim2im`` root attribute of ``cellmap predict``'s output, of the
postprocessing steps its values went through."""


@dataclass
class Processed:
    output: Path
    arrays: int
    chain: list[str]


def process_crops(
    model: str | Path,
    inputs: str | Path,
    output: str | Path,
    *,
    overrides: Sequence[str] = (),
    head: str | None = None,
    block: int = 64,
    overwrite: bool = False,
    trust_model: bool = False,
    report: Callable[[str], None] | None = None,
) -> Processed:
    """Run ``head``'s postprocessing chain over the crop predictions ``inputs`` into the zarr
    group ``output`` (see the module docstring)."""
    from bioim2im.formats import load_model
    from bioim2im_cellmap.prediction import MARKER, written_here

    source, target = Path(inputs), Path(output)
    if block < 2:
        raise UserError(f"--block {block}: give at least 2 voxels")
    if target.exists() and not (overwrite and written_here(target)):
        raise UserError(
            f"--output {target} exists; pass --overwrite to replace an earlier output of "
            "cellmap predict or process (nothing else is replaced)"
        )
    refuse_inputs(target, [model, source])
    try:
        group = zarr.open_group(source, mode="r")
    except (OSError, ValueError, LookupError) as exc:
        raise UserError(f"--input {source}: not a zarr group of crop<N> groups ({exc})") from None
    trained = load_model(model, overrides, trust_model=trust_model)
    preset, registry = trained.preset, trained.registry
    heads = list(preset.model.heads)
    name = head or (heads[0] if len(heads) == 1 else None)
    if name not in preset.model.heads:
        raise UserError(f"--head {head!r}: the run's heads are {', '.join(heads)}")
    config = preset.model.heads[name]
    chain = [{"name": step.name, **step.params()} for step in config.postprocess]
    mark = group.attrs.get(MARKER)
    applied = mark.get(APPLIED, []) if isinstance(mark, dict) else []
    if not isinstance(applied, list) or applied != chain[: len(applied)]:
        raise UserError(
            f"{source}: its values went through the steps {_names(applied)}, but the chain to "
            f"run is {_names(chain)}; give a chain that starts with those steps (they are "
            f"skipped), e.g. --set 'model.heads.{name}.postprocess=[...]'"
        )
    todo = config.postprocess[len(applied) :]
    if not todo:
        raise UserError(
            f"{source}: nothing to do: model.heads.{name}.postprocess is {_names(chain)} and its "
            f"values went through all of it; give more steps with --set "
            f"'model.heads.{name}.postprocess=[...]'"
        )
    steps = built(todo, registry)
    arrays = [
        (crop, label, array)
        for crop, crop_group in sorted(group.groups())
        for label, array in sorted(crop_group.arrays())
    ]
    if not arrays:
        raise UserError(f"--input {source}: holds no crop<N>/<class> arrays")
    partial = partial_path(target)
    remove(partial)
    try:
        root = zarr.open_group(partial, mode="w", zarr_format=2)
        root.attrs[MARKER] = {"written_by": "process", APPLIED: chain}
        for crop, label, array in arrays:
            try:
                values = run_chain(array, steps, config.output_dtype, registry, block)
            except (OSError, ValueError, RuntimeError) as exc:
                raise UserError(
                    f"{source / crop / label}: cannot be processed ({type(exc).__name__}: {exc})"
                ) from None
            written = root.require_group(crop).create_array(
                label,
                shape=values.shape,
                dtype=values.dtype,
                chunks=tuple(min(n, 64) for n in values.shape),
            )
            written[...] = values
            written.attrs.update(dict(array.attrs))
            if report is not None:
                report(f"{crop}/{label}")
        publish(partial, target, replace_directory=overwrite and written_here(target))
    except BaseException:
        remove(partial)
        raise
    return Processed(target, len(arrays), [s.name for s in todo])


def _names(steps: Sequence[Any]) -> str:
    return "[" + ", ".join(str(s.get("name")) if isinstance(s, dict) else "?" for s in steps) + "]"


def built(specs: Sequence[Any], registry: Any) -> list[tuple[str, Any]]:
    """The postprocessors ``specs`` (a head's steps) name, built, with their names."""
    return [(spec.name, registry.build("postprocessor", spec)) for spec in specs]


def run_chain(
    array: zarr.Array | np.ndarray,
    steps: Sequence[tuple[str, Any]],
    output_dtype: str | None,
    registry: Any,
    block: int = 64,
) -> np.ndarray:
    """One class's values (one channel on its crop's grid) through ``steps``, block by block:
    what ``cellmap process`` does to each array, and ``cellmap predict`` to each class it
    predicts."""
    from bioim2im.formats.trained_model import chain_output
    from bioim2im.prediction.blockwise import HeadGeometry, label_blockwise

    shape = tuple(int(n) for n in array.shape)
    geometry = HeadGeometry(scale=(1,) * len(shape))
    head = chain_output("process", 1, geometry, steps, output_dtype, registry)
    given = np.dtype(array.dtype)
    if not head.pointwise and given.kind in "biu" and output_dtype is None:
        # Masks and ids (what `cellmap predict` writes) stay masks and ids.
        kept = np.dtype(np.uint8) if given.kind == "b" else given
        head = dataclasses.replace(head, dtype=kept, is_label=True, scaled=False)
    cores = [
        tuple(slice(s, min(s + block, n)) for s, n in zip(start, shape, strict=True))
        for start in itertools.product(*(range(0, n, block) for n in shape))
    ]
    # The steps that look at one voxel at a time, block by block.
    if head.pointwise:
        values = np.zeros((head.blockwise_channels, *shape), head.blockwise_dtype)
        for core in cores:
            read = np.asarray(array[core], dtype=np.float32)[None]
            values[(slice(None), *core)] = head.run_pointwise(read)
    else:
        values = np.asarray(array[...])[None]
    if not head.neighbourhood:
        return head.to_output(values)[0]
    halo = tuple(min(block, n) for n in shape)
    if head.instance:
        labels = np.zeros(shape, np.uint64)

        def label(piece: np.ndarray) -> np.ndarray:
            return head.run_neighbourhood(piece)[0]

        label_blockwise(values, labels, cores, label, halo)
        return head.to_output(labels[None])[0]
    out = np.zeros((head.channels, *shape), head.dtype)
    for core in cores:
        around = tuple(
            slice(max(c.start - h, 0), min(c.stop + h, n))
            for c, h, n in zip(core, halo, shape, strict=True)
        )
        done = head.run_neighbourhood(values[(slice(None), *around)])
        inner = tuple(
            slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, around, strict=True)
        )
        out[(slice(None), *core)] = head.to_output(done[(slice(None), *inner)])
    return out[0]
