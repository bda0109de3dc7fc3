"""Validation: loss and every head's metrics on deterministic validation patches."""

from __future__ import annotations

import time
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

    def snapshot(self, rows: list[list[np.ndarray]]) -> None: ...


def postprocess_chain(registry: ComponentRegistry, head: HeadConfig) -> list[Any]:
    return [registry.build("postprocessor", step) for step in head.postprocess]


def validate(trainer: Validated, model: nn.Module) -> dict[str, float]:
    preset, cfg = trainer.preset, trainer.preset.train
    heads = preset.model.heads
    chains = {name: postprocess_chain(trainer.registry, head) for name, head in heads.items()}
    metrics = {
        name: [trainer.registry.build("metric", m) for m in head.metrics]
        for name, head in heads.items()
    }
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    snapshot_rows: list[list[np.ndarray]] = []
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
            for b in range(raw.shape[0]):
                pred = raw[b]
                for step in chains[name]:
                    pred = step(pred)
                for metric in metrics[name]:
                    for key, value in metric(pred, truth[b]).items():
                        _add(sums, counts, f"val/{name}/{key}", float(value))
                if index == 0 and b == 0 and preset.logging.snapshots:
                    image = batch["image"][0].float().cpu().numpy()
                    snapshot_rows.append([image, truth[b], pred.astype(np.float32)])
    if snapshot_rows:
        trainer.snapshot(snapshot_rows)
    return {key: sums[key] / counts[key] for key in sums}


def _add(sums: dict[str, float], counts: dict[str, int], key: str, value: float) -> None:
    if np.isfinite(value):
        sums[key] = sums.get(key, 0.0) + value
        counts[key] = counts.get(key, 0) + 1
