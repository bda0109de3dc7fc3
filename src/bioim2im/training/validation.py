"""Validation: loss and every head's metrics on deterministic validation patches.

A semantic head's metrics score its *semantic* output: its postprocessing up to the first step
that numbers objects (connected components, watershed), made a class map or mask when it still
holds probabilities or logits (a threshold for one channel, or one per channel when the truth
has a channel per class; else the most likely class). Instance ids would make ``dice`` a score
per object id, and ``best.pt`` would be chosen on it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from bioim2im.config import HeadConfig, Preset
    from bioim2im.plugin.registry import ComponentRegistry

Batch = dict[str, torch.Tensor]


class Validated(Protocol):
    """What validation uses of the trainer (:class:`bioim2im.training.trainer.Trainer`): its
    preset and registry, the validation patches and the micro-batch size, how a batch reaches
    the device, the losses, and where snapshots go."""

    preset: Preset
    registry: ComponentRegistry
    val_data: Any
    micro_batch: int

    def to_device(self, batch: Batch) -> Batch: ...

    def compute_losses(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Batch, Batch]:
        """The total loss, each head's loss, and each head's raw output."""
        ...

    def snapshot(self, rows: list[list[np.ndarray]], heads: Sequence[str] = ()) -> None: ...


def postprocess_chain(registry: ComponentRegistry, head: HeadConfig) -> list[Any]:
    return [registry.build("postprocessor", step) for step in head.postprocess]


@dataclass(frozen=True)
class ScoredChain:
    """The postprocessing a head's validation metrics are computed after, and for a semantic
    head, what its last step gives (``"float"``, ``"probabilities"``, ``"mask"``, ``"labels"``,
    or None when a step does not declare it)."""

    steps: list[Any]
    semantic: bool
    kind: str | None


def scored_chain(registry: ComponentRegistry, head: HeadConfig, spatial_dims: int) -> ScoredChain:
    """What validation scores of ``head``: its whole postprocessing, or for a semantic head,
    the steps before the first one that numbers objects."""
    if head.task != "semantic":
        return ScoredChain(postprocess_chain(registry, head), False, None)
    from bioim2im.plugin.hookspecs import Values

    steps: list[Any] = []
    values: Values | None = Values(head.out_channels, "float")
    dims = registry.get("head", head.name).extras.get("output_spatial_dims") or spatial_dims
    for spec in head.postprocess:
        extras = registry.get("postprocessor", spec.name).extras
        if extras.get("labels", False):
            break
        steps.append(registry.build("postprocessor", spec))
        gives = extras.get("values")
        if values is not None and gives is not None:
            try:
                values = gives(values, spatial_dims=dims, **spec.params())
            except ValueError:
                values = None
        else:
            values = None
    return ScoredChain(steps, True, None if values is None else values.kind)


def semantic_output(pred: np.ndarray, truth: np.ndarray, kind: str | None) -> np.ndarray:
    """A semantic head's output ``(C, *spatial)`` as classes: masks and class maps as they are;
    probabilities (or logits) thresholded at 0.5 (0), per channel when there is one channel or
    the truth has as many, else their most likely class."""
    if kind in ("mask", "labels") or pred.dtype.kind in "uib":
        return pred
    if kind not in ("probabilities", "float"):  # a step that does not say: whole numbers stay
        if np.array_equal(pred, np.round(pred)):
            return pred
        kind = "probabilities"
    level = 0.5 if kind == "probabilities" else 0.0
    per_channel = pred.shape[0] == 1 or (
        truth.ndim == pred.ndim and truth.shape[0] == pred.shape[0]
    )
    if per_channel:
        return (pred > level).astype(np.uint8)
    return pred.argmax(axis=0)[np.newaxis].astype(np.uint16)


def validate(trainer: Validated, model: nn.Module) -> dict[str, float]:
    preset, cfg = trainer.preset, trainer.preset.train
    heads = preset.model.heads
    dims = preset.spatial_dims
    chains = {name: scored_chain(trainer.registry, head, dims) for name, head in heads.items()}
    metrics = {
        name: [trainer.registry.build("metric", m) for m in head.metrics]
        for name, head in heads.items()
    }
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    snapshot_rows: list[list[np.ndarray]] = []
    snapshot_heads: list[str] = []
    started = time.monotonic()
    loader = torch.utils.data.DataLoader(
        trainer.val_data, batch_size=trainer.micro_batch, num_workers=0
    )
    for index, batch in enumerate(loader):
        if cfg.val_max_batches is not None and index >= cfg.val_max_batches:
            break
        if cfg.val_max_seconds is not None and time.monotonic() - started > cfg.val_max_seconds:
            break
        batch = trainer.to_device(batch)
        loss, parts, outputs = trainer.compute_losses(model, batch)
        _add(sums, counts, "val/loss", float(loss))
        for name, value in parts.items():
            _add(sums, counts, f"val/{name}/loss", float(value))
        for name in heads:
            raw = outputs[name].float().cpu().numpy()
            truth = batch.get(f"truth/{name}", batch[f"target/{name}"]).cpu().numpy()
            boxes = batch.get(f"box/{name}")
            for b in range(raw.shape[0]):
                pred = raw[b]
                chain = chains[name]
                for step in chain.steps:
                    pred = step(pred)
                if chain.semantic:
                    pred = semantic_output(np.asarray(pred), truth[b], chain.kind)
                # An image smaller than the patch is padded: only the image is scored.
                inside = _inside(None if boxes is None else boxes[b])
                for metric in metrics[name]:
                    for key, value in metric(pred[inside], truth[b][inside]).items():
                        _add(sums, counts, f"val/{name}/{key}", float(value))
                if index == 0 and b == 0 and preset.logging.snapshots:
                    image = batch["image"][0].float().cpu().numpy()
                    snapshot_rows.append([image, truth[b], pred.astype(np.float32)])
                    snapshot_heads.append(name)
    if snapshot_rows:
        trainer.snapshot(snapshot_rows, snapshot_heads)
    return {key: sums[key] / counts[key] for key in sums}


def _inside(box: torch.Tensor | None) -> tuple[slice, ...]:
    """The slices (channels first) of a patch's image part, from its (start, stop) per axis."""
    if box is None:
        return (slice(None),)
    return (slice(None), *(slice(int(start), int(stop)) for start, stop in box.tolist()))


def _add(sums: dict[str, float], counts: dict[str, int], key: str, value: float) -> None:
    if np.isfinite(value):
        sums[key] = sums.get(key, 0.0) + value
        counts[key] = counts.get(key, 0) + 1
