"""Patches per second: bioim2im's data pipeline vs the MONAI pipeline a user would write.

Both read the same TIFF files, cache the decoded and normalised images in memory, draw a third
of the patches around labelled voxels, flip, rotate by 90° and add Gaussian noise, and run with
the same number of DataLoader workers. bioim2im also builds the weight map of every patch.

- MONAI: CacheDataset over tifffile reads + EnsureChannelFirstd + ScaleIntensityRangePercentilesd
  + FgBgToIndicesd (cached), then RandCropByPosNegLabeld (pos=1, neg=2, num_samples = patches
  per image, at most the batch size), RandFlipd per axis, RandRotate90d, RandGaussianNoised; batches collated with
  list_data_collate.
- bioim2im: ``training_datasets`` + ``make_loader`` on a preset with the same settings.

Throughput is measured after a few warm-up batches (worker start-up excluded); set-up time
(decoding and caching every image) is reported separately.

    python benchmarks/bench_data.py [--workers 2] [--batches 40] [--cases 2d,3d]

The last line printed is one JSON object with every figure; ``ratio`` is the geometric mean
over the cases of bioim2im's patches/s divided by MONAI's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from scipy import ndimage

PATCHES_PER_IMAGE = 4
NOISE_STD = 0.1


@dataclass(frozen=True)
class Case:
    name: str
    n_images: int
    shape: tuple[int, ...]
    patch: tuple[int, ...]
    batch: int


CASES = {
    "2d": Case("2d", 16, (512, 512), (256, 256), 8),
    "3d": Case("3d", 8, (64, 256, 256), (32, 128, 128), 2),
}


def write_dataset(root: Path, case: Case) -> list[dict[str, str]]:
    """Blobby labels (about a fifth of the voxels) and noisy images, as uncompressed TIFFs."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(case.n_images):
        coarse = rng.random(tuple(max(2, n // 8) for n in case.shape))
        smooth = ndimage.zoom(
            coarse, [n / c for n, c in zip(case.shape, coarse.shape, strict=True)], order=1
        )
        labels = (smooth > np.quantile(smooth, 0.8)).astype(np.uint8)
        image = (labels * 500.0 + rng.normal(1000, 100, case.shape)).astype(np.float32)
        paths = {
            "image": root / "IM" / f"img_{i:03d}.tif",
            "label": root / "GT" / f"img_{i:03d}.tif",
        }
        for key, array in (("image", image), ("label", labels)):
            paths[key].parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(paths[key], array)
        files.append({k: str(v) for k, v in paths.items()})
    return files


def bioim2im_loader(root: Path, case: Case, workers: int) -> Iterator[dict[str, torch.Tensor]]:
    from bioim2im.config import validate
    from bioim2im.data.datasets import training_datasets
    from bioim2im.data.loader import make_loader
    from bioim2im.plugin.manager import get_registry

    table = {
        "data": {
            "path": str(root),
            "patch_size": list(case.patch),
            "batch_size": case.batch,
            "patches_per_image": PATCHES_PER_IMAGE,
            "foreground_fraction": 1 / 3,
            "val_fraction": 0.0,
            "cache": "memory",
            "num_workers": workers,
            "normalize": {"name": "percentile", "lower": 1.0, "upper": 99.8},
            "augment": [
                {"name": "flip", "prob": 0.5},
                {"name": "rot90", "prob": 0.5},
                {"name": "gaussian_noise", "prob": 0.3, "std": NOISE_STD},
            ],
        },
        "model": {
            "backbone": {"name": "unet"},
            "heads": {"seg": {"name": "conv", "loss": {"name": "dice_ce"}}},
        },
    }
    preset = validate(table, get_registry(), "benchmark preset")
    train, _ = training_datasets(preset, check=False)
    return iter(make_loader(train, batch_size=case.batch, num_workers=workers, seed=0))


def monai_loader(files: list[dict[str, str]], case: Case, workers: int) -> Iterator[dict[str, Any]]:
    from monai.data import CacheDataset, DataLoader, list_data_collate
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        FgBgToIndicesd,
        Lambdad,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        ScaleIntensityRangePercentilesd,
    )

    keys = ["image", "label"]
    dims = len(case.shape)
    # Several patches per cached image, as many as fit in one batch of case.batch patches.
    samples = min(PATCHES_PER_IMAGE, case.batch)
    transform = Compose(
        [
            Lambdad(keys, tifffile.imread),
            EnsureChannelFirstd(keys, channel_dim="no_channel"),
            EnsureTyped(keys, dtype=torch.float32),
            ScaleIntensityRangePercentilesd("image", lower=1.0, upper=99.8, b_min=0.0, b_max=1.0),
            FgBgToIndicesd("label"),
            RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=case.patch,
                pos=1,
                neg=2,
                num_samples=samples,
                fg_indices_key="label_fg_indices",
                bg_indices_key="label_bg_indices",
            ),
            *(RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(dims)),
            RandRotate90d(keys, prob=0.5, spatial_axes=(dims - 2, dims - 1)),
            RandGaussianNoised("image", prob=0.3, std=NOISE_STD),
        ]
    )
    dataset = CacheDataset(
        files, transform, cache_rate=1.0, num_workers=max(1, workers), progress=False
    )
    loader = DataLoader(
        dataset,
        batch_size=case.batch // samples,
        shuffle=True,
        num_workers=workers,
        collate_fn=list_data_collate,
        persistent_workers=workers > 0,
    )
    return (batch for _ in itertools.count() for batch in loader)


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
    return {
        "setup_s": round(setup, 2),
        "patches": patches,
        "seconds": round(seconds, 2),
        "patches_per_s": round(patches / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers of both pipelines"
    )
    parser.add_argument(
        "--batches", type=int, default=100, help="timed batches per case and pipeline"
    )
    parser.add_argument("--warmup", type=int, default=4, help="untimed batches first")
    parser.add_argument("--cases", default="2d,3d", help="comma-separated: 2d, 3d")
    args = parser.parse_args()
    torch.set_num_threads(1)

    results: dict[str, Any] = {"workers": args.workers, "cases": {}}
    print(
        f"{'case':<5} {'pipeline':<9} {'images':>16} {'patch':>12} {'batch':>5} {'setup s':>8} {'patches/s':>10}"
    )
    for name in args.cases.split(","):
        case = CASES[name]
        with tempfile.TemporaryDirectory(prefix=f"bench_data_{name}_") as tmp:
            root = Path(tmp)
            files = write_dataset(root, case)
            figures = {
                "monai": measure(
                    partial(monai_loader, files, case, args.workers), args.batches, args.warmup
                ),
                "bioim2im": measure(
                    partial(bioim2im_loader, root, case, args.workers), args.batches, args.warmup
                ),
            }
        ratio = figures["bioim2im"]["patches_per_s"] / figures["monai"]["patches_per_s"]
        images = f"{case.n_images} x {'x'.join(map(str, case.shape))}"
        for pipeline, figure in figures.items():
            print(
                f"{name:<5} {pipeline:<9} {images:>16} {'x'.join(map(str, case.patch)):>12} {case.batch:>5} "
                f"{figure['setup_s']:>8.2f} {figure['patches_per_s']:>10.1f}"
            )
        print(f"{name:<5} ratio bioim2im / MONAI: {ratio:.2f}")
        results["cases"][name] = {**figures, "ratio": round(ratio, 3)}
    ratios = [c["ratio"] for c in results["cases"].values()]
    results["ratio"] = round(math.exp(sum(map(math.log, ratios)) / len(ratios)), 3)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
