"""The TensorBoard logger (torch's SummaryWriter; needs the tensorboard package)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


class TensorBoardLogger:
    """Scalars under their metric names (``loss``, ``val/seg/dice``...), snapshots as images."""

    def __init__(self, folder: Path, *, start_step: int, images: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run logs again the steps after its checkpoint: TensorBoard drops the
        # events it holds from that step on instead of showing both.
        self.writer = SummaryWriter(str(folder), purge_step=start_step or None)
        self.images = images

    def log_metrics(self, step: int, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        if self.images:
            self.writer.add_image(name, image, step, dataformats="HW")
            self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()
