"""Helpers of the napari plugin's tests: tiny presets and images, notifications, waiting for
a widget's worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tiny_presets import DROP

TINY = {"train.log_every": 2, "logging.snapshots": True, "predict": DROP}
"""The core tests' tiny preset (tests/tiny_presets.py), which trains in about a second (after
torch is loaded), with validation snapshots for the widgets to show."""

TINY_OVERRIDES = [
    "data.patch_size=[32, 32]",
    "data.batch_size=2",
    "data.augment=[]",
    "model.features=8",
    'model.backbone={name = "unet", channels = [8, 16], strides = [2], num_res_units = 0}',
    "train.log_every=1",
    "train.val_every=100",
    "train.checkpoint_every=100",
    "logging.snapshots=false",
]
"""The same, as ``--set`` lines over a preset chosen by name."""


def nuclei(shape: tuple[int, int], seed: int, count: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A float image of bright disks on noise, and their instance labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for label in range(1, count + 1):
        cy, cx = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
        radius = rng.integers(4, 8)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = label
    image = (labels > 0) * 0.8 + rng.normal(0.1, 0.05, shape)
    return image.astype(np.float32), labels


def write_nuclei(root: Path, n: int, shape: tuple[int, int] = (64, 64)) -> Path:
    """``n`` images in ``IM/`` and their labels in ``GT/``."""
    import tifffile

    for folder in ("IM", "GT"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, labels = nuclei(shape, seed=i)
        tifffile.imwrite(root / "IM" / f"img{i}.tif", image)
        tifffile.imwrite(root / "GT" / f"img{i}.tif", labels)
    return root


def errors(shown: list[Any]) -> list[str]:
    return [n.message for n in shown if str(n.severity).lower().endswith("error")]


def wait_for(qtbot: Any, widget: Any, timeout: int = 120_000) -> None:
    """Until ``widget``'s job has ended and its result was handled in the GUI thread."""
    qtbot.waitUntil(lambda: not widget.job.running, timeout=timeout)
