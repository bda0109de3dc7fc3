"""The overrides that make the cellmap-3d preset's training as short as the tests need: a tiny
network on 16³ patches, ``steps`` steps, one validation batch and a checkpoint at the end."""

from __future__ import annotations


def shortest_training(steps: int) -> list[str]:
    return [
        "data.patch_size=[16, 16, 16]",
        "data.batch_size=2",
        "data.num_workers=0",
        "model.features=4",
        "model.backbone.channels=[4, 8]",
        "model.backbone.strides=[2]",
        f"train.steps={steps}",
        f"train.val_every={steps}",
        "train.val_max_batches=1",
        f"train.checkpoint_every={steps}",
        "train.scheduler.warmup_steps=0",
        "logging.progress=lines",
        "logging.snapshots=false",
    ]
