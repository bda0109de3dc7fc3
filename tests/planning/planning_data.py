"""Small synthetic datasets for every task and shape the planning tests need, written fast
(simple shapes rather than the realistic generators where only the fingerprint matters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bioim2im.io.tiff import write_tiff

SHAPES: dict[str, tuple[tuple[int, ...], list[float] | None]] = {
    "2d": ((96, 80), None),
    "3d": ((24, 48, 40), [1.0, 1.0, 1.0]),
    "3d-aniso": ((12, 64, 56), [3.0, 1.0, 1.0]),
    "tiny-2d": ((13, 9), None),
    "tiny-3d": ((5, 11, 9), [2.0, 1.0, 1.0]),
    "large-2d": ((1024, 960), None),
    "large-3d": ((40, 256, 224), [2.0, 1.0, 1.0]),
}
"""Image shape and voxel size of each kind of data."""


def blobs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, instance labels): touching boxes on a grid, bright on a dark noisy background."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    cell = [max(2, n // 6) for n in shape]
    grid = np.stack(
        np.meshgrid(*(np.arange(n) // c for n, c in zip(shape, cell, strict=True)), indexing="ij")
    )
    ids = (
        np.ravel_multi_index(tuple(grid), [n // c + 1 for n, c in zip(shape, cell, strict=True)])
        + 1
    )
    inside = np.ones(shape, bool)
    for axis, c in enumerate(cell):
        position = np.arange(shape[axis]) % c
        keep = (position > 0) | (np.arange(shape[axis]) % (2 * c) < c)
        inside &= np.expand_dims(keep, tuple(a for a in range(len(shape)) if a != axis))
    labels[inside] = ids[inside].astype(np.uint16)
    image = 0.05 + 0.8 * (labels > 0) + rng.normal(0, 0.05, shape)
    return image.astype(np.float32), labels


def write(root: Path, task: str, kind: str, n: int = 2) -> Path:
    """A dataset of ``n`` images for ``task`` ('segmentation', 'instance', 'n2v', 'restoration',
    'labelfree', 'superres', 'pix2pix', 'cyclegan', 'multitask') of ``kind`` (a key of SHAPES)."""
    shape, voxel = SHAPES[kind]
    axes = "ZYX"[-len(shape) :]
    for i in range(n):
        image, labels = blobs(shape, i)
        files: dict[str, np.ndarray] = {"IM": image}
        if task == "instance":
            files["GT"] = labels
        elif task == "segmentation":
            files["GT"] = (labels > 0).astype(np.uint8)
        elif task in ("restoration", "labelfree", "pix2pix", "cyclegan"):
            files["GT"] = (labels > 0).astype(np.float32)
        elif task == "superres":
            files["GT"] = np.kron(image, np.ones((2,) * len(shape), np.float32))
        elif task == "multitask":
            files.update(
                GT=(labels > 0).astype(np.uint8),
                FLUO=(labels > 0).astype(np.float32),
                MIP=(labels > 0).astype(np.float32).max(axis=0),
            )
        for role, array in files.items():
            size = voxel
            if role == "MIP":
                size = None
            elif task == "superres" and role == "GT" and voxel is not None:
                size = [v / 2 for v in voxel]
            write_tiff(
                root / role / f"img_{i}.tif",
                array,
                axes=axes[-array.ndim :],
                voxel_size=size,
                compression="none",
            )
    return root
