"""Helpers of the prediction tests (a module of its own: conftest is not importable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioim2im.data.synthetic import nuclei
from bioim2im.io.tiff import write_tiff

# Turns the 2D model's "seg" head into an instance head: its mask's connected components.
INSTANCE = (
    "model.heads.seg.task=instance",
    'model.heads.seg.postprocess=[{name = "sigmoid"}, {name = "threshold"}, '
    '{name = "connected_components"}]',
)


def nuclei_image(
    path: Path, shape: tuple[int, ...], seed: int = 0, axes: str | None = None
) -> Path:
    """A synthetic nuclei image written as OME-TIFF."""
    image, _ = nuclei(shape, seed=seed)
    write_tiff(path, image, axes=axes or ("ZYX" if len(shape) == 3 else "YX"), compression="none")
    return path


def read_zarr(path: Path) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(path, mode="r")[:])


def matched_objects(truth: np.ndarray, found: np.ndarray) -> list[float]:
    """For each object of ``truth``, the best IoU with an object of ``found``."""
    best = []
    for label in np.unique(truth[truth > 0]):
        mask = truth == label
        candidates, overlaps = np.unique(found[mask & (found > 0)], return_counts=True)
        ious = [
            n / np.count_nonzero(mask | (found == c))
            for c, n in zip(candidates, overlaps, strict=True)
        ]
        best.append(max(ious, default=0.0))
    return best


def head_path(container: Path, head: str) -> Path:
    """Where ``predict`` wrote ``head`` in an OME-Zarr container: ``labels/<head>`` for a label
    image (a mask, instance labels), else ``<head>``."""
    labels = container / "labels" / head
    return labels if labels.exists() else container / head
