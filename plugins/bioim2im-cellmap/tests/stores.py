"""Synthetic CellMap stores that mirror the challenge's layout.

Two datasets of one 384 nm cube each (``jrc_alpha`` at 4 nm isotropic, ``jrc_beta`` at 6 x 4 x 4
nm), each a zarr v2 store with NGFF 0.4 multiscales in nanometers::

    data/<dataset>/<dataset>.zarr/recon-1/em/fibsem-uint8/s0, s1, s2
    data/<dataset>/<dataset>.zarr/recon-1/labels/groundtruth/crop<N>/<class>/s0, s1

The scene is defined in physical space, so every level and crop agrees: mitochondria (small
spheres, ``mito``, instances), a nucleus (one large sphere, ``nuc``), and ER sheets (``er``,
semantic, never inside a mitochondrion). Crops cover sub-boxes at their own scale and offset and
annotate only some classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

PRESETS = Path(__file__).resolve().parents[1] / "src" / "bioim2im_cellmap" / "presets"
"""The plugin's presets (cellmap-3d.toml, cellmap-2d.toml)."""
EXTENT = 384.0
MITO = [((120.0, 140.0, 110.0), 36.0), ((250.0, 230.0, 260.0), 30.0), ((200.0, 300.0, 120.0), 28.0)]
NUCLEUS = ((260.0, 110.0, 150.0), 80.0)


def centres(first: float, step: float, n: int) -> np.ndarray:
    return first + step * np.arange(n)


def scene(
    first: Sequence[float], step: Sequence[float], shape: Sequence[int]
) -> dict[str, np.ndarray]:
    """The classes sampled at voxel centres ``first + i * step`` (nm)."""
    z, y, x = np.meshgrid(
        *(centres(f, s, n) for f, s, n in zip(first, step, shape, strict=True)), indexing="ij"
    )
    mito = np.zeros(shape, dtype=np.uint16)
    for i, (c, r) in enumerate(MITO, start=1):
        mito[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r**2] = i
    (c, r) = NUCLEUS
    nuc = ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r**2).astype(np.uint16)
    sheet = (np.abs(np.sin(y / 23.0) + np.cos(x / 31.0)) < 0.15) & (mito == 0) & (nuc == 0)
    return {"mito": mito, "nuc": nuc, "er": sheet.astype(np.uint8)}


def raw_of(labels: dict[str, np.ndarray], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    value = 110.0 + 90.0 * (labels["mito"] > 0) - 60.0 * (labels["nuc"] > 0) + 70.0 * labels["er"]
    return np.clip(value + rng.normal(0, 8, value.shape), 0, 255).astype(np.uint8)


def write_multiscale(
    path: Path, levels: Sequence[tuple[np.ndarray, Sequence[float], Sequence[float]]]
) -> None:
    """An NGFF 0.4 multiscale group (zarr v2) with levels s0, s1, ... in nanometers."""
    group = zarr.open_group(path, mode="w", zarr_format=2)
    datasets = []
    for i, (array, scale, translation) in enumerate(levels):
        stored = group.create_array(
            f"s{i}", shape=array.shape, dtype=array.dtype, chunks=(32, 32, 32)
        )
        stored[...] = array
        datasets.append(
            {
                "path": f"s{i}",
                "coordinateTransformations": [
                    {"type": "scale", "scale": [float(s) for s in scale]},
                    {"type": "translation", "translation": [float(t) for t in translation]},
                ],
            }
        )
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": path.name,
            "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
            "datasets": datasets,
        }
    ]


def pyramid(
    sample: Callable[..., np.ndarray],
    scale: Sequence[float],
    lower: Sequence[float],
    shape: Sequence[int],
    levels: int,
) -> list[tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]]:
    """Levels of a box starting at ``lower`` (nm): level k has voxels 2**k times larger."""
    out = []
    for k in range(levels):
        step = tuple(s * 2**k for s in scale)
        first = tuple(lo + st / 2 for lo, st in zip(lower, step, strict=True))
        size = tuple(max(1, n // 2**k) for n in shape)
        out.append((sample(first, step, size), step, first))
    return out


@dataclass(frozen=True)
class S3:
    """A local S3 server and the bucket holding the synthetic stores."""

    endpoint: str
    bucket: str


@dataclass(frozen=True)
class CropSpec:
    dataset: str
    number: int
    classes: tuple[str, ...]
    scale: tuple[float, float, float]
    lower: tuple[float, float, float]
    shape: tuple[int, int, int]

    @property
    def translation(self) -> tuple[float, ...]:
        return tuple(lo + s / 2 for lo, s in zip(self.lower, self.scale, strict=True))

    def labels(self) -> dict[str, np.ndarray]:
        return scene(self.translation, self.scale, self.shape)


DATASETS = {"jrc_alpha": (4.0, 4.0, 4.0), "jrc_beta": (6.0, 4.0, 4.0)}
CROPS = (
    CropSpec(
        "jrc_alpha", 1, ("mito", "nuc", "er"), (4.0, 4.0, 4.0), (64.0, 64.0, 64.0), (64, 64, 64)
    ),
    CropSpec("jrc_alpha", 2, ("mito",), (8.0, 8.0, 8.0), (160.0, 160.0, 160.0), (24, 24, 24)),
    CropSpec("jrc_beta", 3, ("nuc", "er"), (8.0, 8.0, 8.0), (96.0, 48.0, 64.0), (24, 28, 28)),
    CropSpec("jrc_beta", 4, ("mito", "er"), (16.0, 16.0, 16.0), (0.0, 0.0, 0.0), (24, 24, 24)),
)


def write_cellmap_data(root: Path) -> Path:
    """The two datasets and their crops under ``root/data``; returns ``root/data``."""
    data = root / "data"
    for seed, (dataset, scale) in enumerate(DATASETS.items()):
        store = data / dataset / f"{dataset}.zarr"
        zarr.open_group(store, mode="w", zarr_format=2)
        zarr.open_group(store / "recon-1", mode="w", zarr_format=2)
        shape = tuple(int(EXTENT / s) for s in scale)

        def raw_sample(first, step, size, seed=seed):
            return raw_of(scene(first, step, size), seed)

        write_multiscale(
            store / "recon-1" / "em" / "fibsem-uint8",
            pyramid(raw_sample, scale, (0.0, 0.0, 0.0), shape, 3),
        )
    for crop in CROPS:
        base = data / crop.dataset / f"{crop.dataset}.zarr" / "recon-1" / "labels" / "groundtruth"
        for name in crop.classes:

            def label_sample(first, step, size, name=name):
                return scene(first, step, size)[name]

            write_multiscale(
                base / f"crop{crop.number}" / name,
                pyramid(label_sample, crop.scale, crop.lower, crop.shape, 2),
            )
    return data


def datasplit_text(data: Path, usages: dict[int, str]) -> str:
    """A datasplit CSV as the toolbox writes it (quoted fields, no header)."""
    lines = []
    for crop in CROPS:
        if crop.number not in usages:
            continue
        store = data / crop.dataset / f"{crop.dataset}.zarr"
        lines.append(
            f'"{usages[crop.number]}","{store}","recon-1/em/fibsem-uint8","{store}",'
            f'"recon-1/labels/groundtruth/crop{crop.number}/[{",".join(crop.classes)}]"'
        )
    return "\n".join(lines) + "\n"


def write_truth(
    path: Path, crops: dict[str, dict[str, tuple[np.ndarray, Sequence[float], Sequence[float]]]]
) -> Path:
    """The challenge's truth layout: ``crop<N>/<class>`` arrays with voxel_size/translation."""
    group = zarr.open_group(path, mode="w", zarr_format=2)
    for crop, classes in crops.items():
        sub = group.require_group(crop)
        for name, (array, scale, translation) in classes.items():
            stored = sub.create_array(
                name, shape=array.shape, dtype=array.dtype, chunks=array.shape
            )
            stored[...] = array
            stored.attrs.update(voxel_size=list(scale), translation=list(translation))
    return path


def write_array(group: zarr.Group, name: str, array: np.ndarray, **attrs: object) -> None:
    stored = group.create_array(name, shape=array.shape, dtype=array.dtype, chunks=array.shape)
    stored[...] = array
    stored.attrs.update(attrs)


def manifest_text(
    rows: Sequence[tuple[int, str, str, Sequence[float], Sequence[float], Sequence[int]]],
) -> str:
    def listed(values: Sequence[float]) -> str:
        return "[" + ";".join(str(v) for v in values) + "]"

    lines = ["crop_name,dataset,class_label,voxel_size,translation,shape"]
    lines += [f"{c},{d},{n},{listed(s)},{listed(t)},{listed(sh)}" for c, d, n, s, t, sh in rows]
    return "\n".join(lines) + "\n"
