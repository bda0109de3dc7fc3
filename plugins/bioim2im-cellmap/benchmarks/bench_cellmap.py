"""Patches per second: bioim2im's CellMap loader vs a plain MONAI/torch loader over the same crops.

The data: CellMap-style zarr stores (NGFF multiscales in nm, raw ``s0``/``s1`` compressed in
64^3 chunks; label crops of one array per class, each crop annotating 2 of the 3 classes), made
here. Both loaders draw 3D patches from the crops at the raw's own scale, normalise the raw to
[0, 1], flip along each axis at random, and batch.

- plain: a torch ``Dataset`` a user would write: a uniformly drawn crop and position, the raw
  and each class's label read by zarr slicing (zeros for a class the crop lacks), MONAI
  ``RandFlipd`` per axis; a ``torch.utils.data.DataLoader``.
- bioim2im: the ``cellmap`` data layout from a datasplit (``training_datasets`` +
  ``make_loader``): crops drawn by class counts, patches centred on foreground half the time,
  pyramid level chosen by scale, a per-class weight map (unannotated classes masked,
  pos_weight), flips. Twice: with ``data.cache = "none"`` (every patch read from the zarr
  chunks, like the plain loader) and with the default ``"memory"`` (each crop's labels and the
  raw around it held in memory, shared by the workers).

    python plugins/bioim2im-cellmap/benchmarks/bench_cellmap.py [--workers 0,2,4] [--batches 60]

Throughput is measured after warm-up batches (worker start-up excluded). The last line is one
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from scipy import ndimage

CLASSES = ["mito", "nuc", "er"]
SCALE = 8.0
RAW_SHAPE = (192, 192, 192)
CROP_SHAPE = (96, 96, 96)
PATCH = (64, 64, 64)
BATCH = 4


def write_multiscale(path: Path, levels: list[tuple[np.ndarray, float, float]]) -> None:
    group = zarr.open_group(path, mode="w", zarr_format=2)
    datasets = []
    for i, (array, scale, translation) in enumerate(levels):
        stored = group.create_array(
            f"s{i}", shape=array.shape, dtype=array.dtype, chunks=(64, 64, 64)
        )
        stored[...] = array
        datasets.append(
            {
                "path": f"s{i}",
                "coordinateTransformations": [
                    {"type": "scale", "scale": [scale] * 3},
                    {"type": "translation", "translation": [translation] * 3},
                ],
            }
        )
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
            "datasets": datasets,
        }
    ]


def write_data(root: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Two datasets of 4 crops each; returns the datasplit and each crop's arrays for the plain
    loader (raw location, crop offset in raw voxels, class -> label location or None)."""
    rng = np.random.default_rng(0)
    lines, crops = [], []
    for d in range(2):
        dataset = f"jrc_bench{d}"
        store = root / dataset / f"{dataset}.zarr"
        zarr.open_group(store, mode="w", zarr_format=2)
        coarse = rng.random((3, *(n // 16 for n in RAW_SHAPE)))
        smooth = np.stack([ndimage.zoom(c, 16, order=1) for c in coarse])
        labels = smooth > np.quantile(smooth, 0.85, axis=(1, 2, 3), keepdims=True)
        labels[0] &= ~labels[1]  # mito and nuc never overlap
        raw = np.clip(
            100 + 60 * labels[0] - 40 * labels[1] + 50 * labels[2] + rng.normal(0, 10, RAW_SHAPE),
            0,
            255,
        )
        raw = raw.astype(np.uint8)
        half = raw.reshape(96, 2, 96, 2, 96, 2).mean(axis=(1, 3, 5)).astype(np.uint8)
        write_multiscale(
            store / "recon-1/em/fibsem-uint8", [(raw, SCALE, SCALE / 2), (half, 2 * SCALE, SCALE)]
        )
        for c, corner in enumerate(itertools.product((0, 96), (0, 96), (48,))):
            number = 4 * d + c + 1
            present = [name for k, name in enumerate(CLASSES) if k != c % 3]
            box = tuple(slice(o, o + n) for o, n in zip(corner, CROP_SHAPE, strict=True))
            group = f"recon-1/labels/groundtruth/crop{number}"
            for k, name in enumerate(CLASSES):
                if name in present:
                    origin = corner[0] * SCALE + SCALE / 2
                    ids = ndimage.label(labels[k][box])[0].astype(np.uint16)
                    write_multiscale(store / group / name, [(ids, SCALE, origin)])
            lines.append(
                f'"train","{store}","recon-1/em/fibsem-uint8","{store}","{group}/[{",".join(present)}]"'
            )
            crops.append(
                {
                    "raw": str(store / "recon-1/em/fibsem-uint8/s0"),
                    "corner": corner,
                    "labels": {
                        n: (str(store / group / n / "s0") if n in present else None)
                        for n in CLASSES
                    },
                }
            )
    split = root / "datasplit.csv"
    split.write_text("\n".join(lines) + "\n")
    return split, crops


def bioim2im_loader(split: Path, workers: int, cache: str) -> Iterator[dict[str, torch.Tensor]]:
    from bioim2im.config import validate
    from bioim2im.data.datasets import training_datasets
    from bioim2im.data.loader import make_loader
    from bioim2im.plugin.manager import get_registry

    table = {
        "data": {
            "path": str(split),
            "layout": {"name": "cellmap", "classes": CLASSES, "input_scale": [SCALE] * 3},
            "patch_size": list(PATCH),
            "batch_size": BATCH,
            "foreground_fraction": 0.5,
            "num_workers": workers,
            "cache": cache,
            "normalize": {"name": "fixed_range", "min": 0.0, "max": 255.0},
            "augment": [{"name": "flip", "prob": 0.5}],
        },
        "model": {
            "backbone": {"name": "unet"},
            "heads": {"seg": {"name": "conv", "loss": {"name": "bce"}}},
        },
    }
    preset = validate(table, get_registry(), "benchmark preset")
    train, _ = training_datasets(preset, check=False)
    return iter(make_loader(train, batch_size=BATCH, num_workers=workers, seed=0))


class PlainCrops(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Random patches of the crops, read with zarr slicing and flipped with MONAI."""

    def __init__(self, crops: list[dict[str, Any]]) -> None:
        from monai.transforms import Compose, RandFlipd

        self.crops = crops
        self.flip = Compose(
            [RandFlipd(["image", "label"], prob=0.5, spatial_axis=a) for a in range(3)]
        )
        self._arrays: dict[str, zarr.Array] = {}

    def _array(self, path: str) -> zarr.Array:
        if path not in self._arrays:
            self._arrays[path] = zarr.open_array(path, mode="r")
        return self._arrays[path]

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(index)
        crop = self.crops[int(rng.integers(len(self.crops)))]
        start = [int(rng.integers(0, c - p + 1)) for c, p in zip(CROP_SHAPE, PATCH, strict=True)]
        inside = tuple(slice(s, s + p) for s, p in zip(start, PATCH, strict=True))
        in_raw = tuple(
            slice(o + s, o + s + p) for o, s, p in zip(crop["corner"], start, PATCH, strict=True)
        )
        image = self._array(crop["raw"])[in_raw].astype(np.float32)[None] / 255.0
        label = np.stack(
            [
                (self._array(path)[inside] > 0).astype(np.float32)
                if path
                else np.zeros(PATCH, np.float32)
                for path in crop["labels"].values()
            ]
        )
        sample = self.flip({"image": torch.from_numpy(image), "label": torch.from_numpy(label)})
        return {k: torch.as_tensor(v) for k, v in sample.items()}


def plain_loader(crops: list[dict[str, Any]], workers: int) -> Iterator[dict[str, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(
        PlainCrops(crops),
        batch_size=BATCH,
        shuffle=False,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return iter(loader)


def measure(make: Callable[[], Iterator[Any]], batches: int, warmup: int) -> dict[str, float]:
    started = time.perf_counter()
    stream = make()
    setup = time.perf_counter() - started
    for _ in itertools.islice(stream, warmup):
        pass
    started = time.perf_counter()
    patches = 0
    for batch in itertools.islice(stream, batches):
        patches += len(batch["image"])
    seconds = time.perf_counter() - started
    del stream
    return {"setup_s": round(setup, 2), "patches_per_s": round(patches / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="0,2,4", help="comma-separated worker counts")
    parser.add_argument("--batches", type=int, default=60, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, Any] = {"patch": list(PATCH), "batch": BATCH, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench_cellmap_") as tmp:
        split, crops = write_data(Path(tmp))
        print(
            f"{'workers':>7} {'plain':>9} {'bioim2im (no cache)':>20} {'ratio':>6} "
            f"{'bioim2im (memory)':>18} {'ratio':>6}   (patches/s)"
        )
        for workers in (int(w) for w in args.workers.split(",")):
            run = {
                "plain": measure(partial(plain_loader, crops, workers), args.batches, args.warmup),
                "bioim2im_none": measure(
                    partial(bioim2im_loader, split, workers, "none"), args.batches, args.warmup
                ),
                "bioim2im_memory": measure(
                    partial(bioim2im_loader, split, workers, "memory"), args.batches, args.warmup
                ),
            }
            base = run["plain"]["patches_per_s"]
            for key in ("bioim2im_none", "bioim2im_memory"):
                run[key]["ratio"] = round(run[key]["patches_per_s"] / base, 3)
            none, memory = run["bioim2im_none"], run["bioim2im_memory"]
            print(
                f"{workers:>7} {base:>9.1f} {none['patches_per_s']:>20.1f} {none['ratio']:>6.2f} "
                f"{memory['patches_per_s']:>18.1f} {memory['ratio']:>6.2f}"
            )
            results["runs"][workers] = run
    print(json.dumps(results))


if __name__ == "__main__":
    main()
