"""Helpers of the end-to-end task tests: the overrides that make a shipped preset tiny, train
then predict, reading images, and the trivial baselines each model must beat."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bioim2im.api import train
from bioim2im.io import open_image
from bioim2im.prediction.job import predict_files

PRESETS = Path(__file__).resolve().parents[2] / "presets"


def tiny(data: Path, steps: int, *extra: str, lr: float = 5e-3) -> list[str]:
    """Overrides that make a shipped preset train in seconds on CPU (then ``extra``)."""
    return [
        f"data.path={data}",
        "data.num_workers=0",
        "model.features=8",
        "model.backbone.channels=[8, 16, 32]",
        "model.backbone.strides=[2, 2]",
        "model.backbone.num_res_units=0",
        f"train.steps={steps}",
        f"train.val_every={steps}",
        f"train.checkpoint_every={steps}",
        f"train.optimizer.lr={lr}",
        'train.scheduler={ name = "cosine", warmup_steps = 5 }',
        "logging.progress=lines",
        "logging.snapshots=false",
        *extra,
    ]


@dataclass
class Run:
    run_dir: Path
    predictions: Path
    """``<stem>_<head>.tif`` per held-out input."""


def train_and_predict(preset: str, overrides: Sequence[str], held_out: Path, where: Path) -> Run:
    """Train ``preset`` with ``overrides``, then predict every image of ``held_out/IM``."""
    run_dir = where / "run"
    train(PRESETS / f"{preset}.toml", overrides=overrides, run_dir=run_dir)
    predictions = where / "predictions"
    predict_files(run_dir, str(held_out / "IM"), predictions, format="tiff", progress=False)
    return Run(run_dir, predictions)


def images(folder: Path, suffix: str = "") -> dict[str, np.ndarray]:
    """The TIFF images of ``folder`` by name (``suffix``, e.g. ``_seg``, removed), axes of size 1
    dropped."""
    found = {}
    for path in sorted(folder.glob(f"*{suffix}.tif")):
        found[path.name.removesuffix(f"{suffix}.tif")] = np.squeeze(open_image(path).read())
    return found


def write_images(folder: Path, arrays: dict[str, np.ndarray], axes: str) -> Path:
    from bioim2im.io.tiff import write_tiff

    for name, array in arrays.items():
        write_tiff(folder / f"{name}.tif", array, axes=axes, compression="none")
    return folder


def otsu(image: np.ndarray) -> np.ndarray:
    """The global-threshold baseline: the pixels above the image's Otsu threshold."""
    from skimage.filters import threshold_otsu

    return image > threshold_otsu(image)


def percentile_normalized(
    image: np.ndarray, reference: np.ndarray | None = None, lower: float = 0.1, upper: float = 99.9
) -> np.ndarray:
    """``image`` scaled as the ``percentile`` normalisation scales ``reference`` (default: itself)."""
    low, high = np.percentile(image if reference is None else reference, [lower, upper])
    return ((image - low) / (high - low)).astype(np.float32)


def fitted(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``a * image + b`` closest to ``truth``: a baseline at its best brightness and contrast."""
    a, b = np.polyfit(image.ravel().astype(np.float64), truth.ravel().astype(np.float64), 1)
    return (a * image + b).astype(np.float32)
