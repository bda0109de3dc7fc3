"""Instance segmentation of crowded nuclei: every instance method after a fixed CPU-minute
budget, against a classical pipeline tuned on the test images themselves.

Data (deterministic, :func:`bioim2im.data.crowded.crowded_nuclei`): clustered, touching nuclei
of 5x sizes and ~8x brightnesses, textured, partly out of focus, on an uneven background with
Poisson noise. Cases: ``2d``, 256 x 256 images; ``3d``, 32 x 128 x 128 volumes with voxels twice
as long along Z; ``3d-small``, what a new user with small real data has: two training stacks and one
validation stack of 31 x 61 x 57 voxels (smaller than instance-3d's 32 x 64 x 64 patch) with
40-65 small touching nuclei each (radius 3-15 pixels along Y/X), voxels 2.5 times as long along
Z, and two more for the test. Training, validation (threshold tuning) and test images have different
seeds.

Methods, each trained from scratch with the data, network and recipe of the shipped instance
preset, ``train.max_minutes = --minutes`` (and ``train.steps = --steps`` when given), the
decoder's thresholds tuned on the validation images at the end:

- ``boundary``: foreground + object-boundary probabilities, watershed from the interiors (the
  head ``instance-2d`` shipped before EmbedSeg);
- ``distance``: foreground + per-object normalised distance to the border, watershed seeded at
  the cores of the (smoothed) distance map;
- ``embedseg``: spatial embeddings + seed map, clustered around the seeds (``embedseg-2d`` /
  ``embedseg-3d``, which ``instance-2d`` / ``instance-3d`` extend);
- ``planned``: the preset ``bioim2im plan --task instance --budget MINUTES`` writes for the
  training images on this machine (``instance-2d`` / ``instance-3d`` fitted to the data).

Oracle: Gaussian smoothing, optional background subtraction, Otsu threshold times a factor,
watershed of the distance transform seeded at its h-maxima; every parameter chosen on the test
images for the best mean AP@0.5. No model gets to see the test images.

Scores on the test images (matched one-to-one, Hungarian): AP@0.5, AP@0.5:0.95 and panoptic
quality PQ@0.5, means over the images.

    python benchmarks/bench_instance.py [--cases 2d 3d 3d-small] [--minutes 8] [--steps N]
        [--seed 0] [--methods boundary distance embedseg planned] [--workdir DIR]

Prints one row per method and dimension as it goes, then a Markdown table and, last, one JSON
object with every figure. The machine's load is printed too: on a shared machine a model
trains fewer steps in the same minutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Case:
    """One benchmark case: image shape, smallest nucleus radius (pixels along Y/X; the largest
    is 5 times that), voxel length along Z (3D) and images per split."""

    dims: int
    shape: tuple[int, ...]
    min_radius: float
    train: int
    val: int
    test: int
    z_spacing: float = 2.0

    @property
    def spacing(self) -> tuple[float, ...]:
        return (self.z_spacing, 1.0, 1.0) if self.dims == 3 else (1.0, 1.0)


CASES: dict[str, Case] = {
    "2d": Case(2, (256, 256), 5.0, train=32, val=6, test=8),
    "3d": Case(3, (32, 128, 128), 4.0, train=12, val=3, test=4),
    "3d-small": Case(3, (31, 61, 57), 3.0, train=2, val=1, test=2, z_spacing=2.5),
}


# Each method is a preset written into the work folder: the shipped instance preset (its data,
# network and training recipe) with the method's head. The head tables are whole, so a method
# does not inherit another's loss or postprocessing.
BOUNDARY_HEAD = """
[model.heads.seg]
name = "conv"
out_channels = 2
loss = { name = "dice_ce", sigmoid = true }
postprocess = [
  { name = "sigmoid" },
  { name = "watershed", mode = "boundary", threshold = 0.5, seed_threshold = 0.5 },
  { name = "remove_small_objects", min_size = 10 },
]
"""
DISTANCE_HEAD = """
[model.heads.seg]
name = "conv"
out_channels = 2
loss = { name = "instance_distance" }
postprocess = [
  { name = "sigmoid" },
  { name = "watershed", mode = "probability", seed_channel = 1, smooth = 1.0 },
  { name = "remove_small_objects", min_size = 10 },
]
"""
METHODS: dict[str, Callable[[int], str] | None] = {
    "boundary": lambda dims: f'extends = "instance-{dims}d"\n{BOUNDARY_HEAD}',
    "distance": lambda dims: f'extends = "instance-{dims}d"\n{DISTANCE_HEAD}',
    "embedseg": lambda dims: f'extends = "embedseg-{dims}d"\n',
    "planned": None,  # written by bioim2im plan for the data (see train_and_predict)
}

SCORES = ("ap@0.50", "ap@0.50:0.95", "pq@0.50")


# ---- data ------------------------------------------------------------------------------------


def write_split(root: Path, case: Case, split: str, seed: int) -> Path:
    """Images and labels of one split under ``root/split/{IM,GT}``, written once."""
    from bioim2im.data.crowded import crowded_nuclei
    from bioim2im.io.tiff import write_tiff

    folder = root / split
    n = getattr(case, split)
    if (folder / "GT" / f"img_{n - 1:03d}.tif").is_file():
        return folder
    # One seed per (split, image): the splits never share an image.
    offsets = {"train": 0, "val": 1, "test": 2}
    seeds = np.random.SeedSequence([seed, case.dims, offsets[split]]).generate_state(n)
    axes = "ZYX" if case.dims == 3 else "YX"
    voxel_size = list(case.spacing) if case.dims == 3 else None
    for i, image_seed in enumerate(seeds):
        image, labels = crowded_nuclei(
            case.shape, seed=int(image_seed), min_radius=case.min_radius, z_spacing=case.z_spacing
        )
        for role, array in (("IM", image), ("GT", labels)):
            write_tiff(
                folder / role / f"img_{i:03d}.tif",
                array,
                axes=axes,
                voxel_size=voxel_size,
                compression="none",
            )
    return folder


def read_folder(folder: Path) -> list[np.ndarray]:
    from bioim2im.io import open_image

    return [np.squeeze(open_image(p).read()) for p in sorted(folder.glob("*.tif"))]


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from bioim2im.metrics.instance import (
        THRESHOLDS,
        detection_scores,
        instance_overlaps,
        match_at_threshold,
    )

    overlaps = instance_overlaps(pred.astype(np.int64), truth.astype(np.int64))
    ap = {t: detection_scores(overlaps, t) for t in THRESHOLDS}
    matched = overlaps.iou[match_at_threshold(overlaps, 0.5)]
    mean_iou = float(matched.mean()) if matched.size else 0.0
    return {
        "ap@0.50": ap[0.5]["ap@0.50"],
        "ap@0.50:0.95": float(np.mean([ap[t][f"ap@{t:.2f}"] for t in THRESHOLDS])),
        "pq@0.50": mean_iou * ap[0.5]["f1@0.50"],
    }


def mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in SCORES}


# ---- the oracle: a classical pipeline tuned on the test images --------------------------------


ORACLE_GRID = {
    "sigma": (1.0, 2.0),
    "background": (False, True),
    "factor": (0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0),
    "h": (0.25, 0.5, 1.0, 2.0, 4.0),
}
"""Smoothing (std, pixels along Y/X), background subtraction, factor on the Otsu threshold, and
h of the h-maxima of the (smoothed) distance transform that seed the watershed."""


def classical(image: np.ndarray, spacing: Sequence[float], params: dict[str, Any]) -> np.ndarray:
    """Otsu foreground, split by a watershed of its distance transform from h-maxima seeds."""
    return classical_split(classical_foreground(image, spacing, params), spacing, params["h"])


def classical_foreground(
    image: np.ndarray, spacing: Sequence[float], params: dict[str, Any]
) -> np.ndarray:
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    sigma = [params["sigma"] / s for s in spacing]
    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma)
    if params["background"]:
        # Subtract what is left after a blur wider than any nucleus: the uneven background.
        smooth = smooth - ndimage.gaussian_filter(smooth, [25.0 / s for s in spacing])
    foreground = smooth > params["factor"] * threshold_otsu(smooth)
    return ndimage.binary_fill_holes(ndimage.binary_opening(foreground))


def classical_split(foreground: np.ndarray, spacing: Sequence[float], h: float) -> np.ndarray:
    from scipy import ndimage
    from skimage import measure, morphology, segmentation

    distance = ndimage.distance_transform_edt(foreground, sampling=spacing)
    distance = ndimage.gaussian_filter(distance, [1.0 / s for s in spacing])
    seeds = measure.label(morphology.h_maxima(distance, h))
    labels = segmentation.watershed(-distance, seeds, mask=foreground)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.where(sizes[labels] >= 8, labels, 0)


def tuned_oracle(
    images: Sequence[np.ndarray], truths: Sequence[np.ndarray], spacing: Sequence[float]
) -> tuple[dict[str, Any], dict[str, float]]:
    """The classical pipeline's best parameters on these very images, and its scores."""
    best: tuple[float, dict[str, Any], dict[str, float]] = (-1.0, {}, {})
    keys = ("sigma", "background", "factor")
    for values in itertools.product(*(ORACLE_GRID[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        foregrounds = [classical_foreground(image, spacing, params) for image in images]
        for h in ORACLE_GRID["h"]:
            rows = [
                scores(classical_split(foreground, spacing, h), truth)
                for foreground, truth in zip(foregrounds, truths, strict=True)
            ]
            found = mean_scores(rows)
            if found["ap@0.50"] > best[0]:
                best = (found["ap@0.50"], {**params, "h": h}, found)
    return best[1], best[2]


# ---- the methods -------------------------------------------------------------------------------


def train_and_predict(
    method: str,
    case_name: str,
    data: dict[str, Path],
    minutes: float,
    seed: int,
    work: Path,
    steps: int | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    from bioim2im.api import predict, train

    case = CASES[case_name]
    preset = work / f"{method}-{case_name}.toml"
    info: dict[str, Any] = {}
    maker = METHODS[method]
    if maker is None:
        # With a fixed number of steps, the plan fits everything but the steps.
        info.update(plan_preset(data["train"], preset, "instance", minutes if not steps else None))
    else:
        preset.write_text(maker(case.dims))
    run_dir = work / f"{method}-{case_name}-seed{seed}-{minutes}min-{steps or 'preset'}steps"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.monotonic()
    train(
        preset,
        overrides=[
            f"data.path={data['train']}",
            f"data.val_path={data['val']}",
            f"train.max_minutes={minutes}",
            f"train.seed={seed}",
            *(_step_overrides(steps) if steps is not None else []),
            "logging.progress=lines",
            "logging.snapshots=false",
        ],
        run_dir=run_dir,
    )
    trained = time.monotonic() - started
    # The machine's load over the last 5 minutes of training: a shared machine trains slower.
    load = os.getloadavg()[1]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = max((r["step"] for r in records), default=0)
    images, truths = read_folder(data["test"] / "IM"), read_folder(data["test"] / "GT")
    started = time.monotonic()
    rows = [scores(predict(run_dir, im)["seg"][0], t) for im, t in zip(images, truths, strict=True)]
    info.update(
        {
            "steps": steps,
            "train_minutes": round(trained / 60, 2),
            "load": round(load, 1),
            "predict_seconds": round(time.monotonic() - started, 1),
        }
    )
    return mean_scores(rows), info


def plan_preset(data: Path, preset: Path, task: str, minutes: float | None) -> dict[str, Any]:
    """Write the preset ``bioim2im plan`` makes for ``data`` to ``preset``; what it decided."""
    from bioim2im.api import plan

    started = time.monotonic()
    result = plan(data, task=task, budget_minutes=minutes, output=preset, overwrite=True)
    planned = {c.key: c.value for c in result.plan.choices}
    keys = ("data.patch_size", "data.batch_size", "model.backbone.strides", "train.steps")
    return {
        "plan_seconds": round(time.monotonic() - started, 1),
        "seconds_per_step": round(result.plan.seconds_per_step or 0.0, 3),
        **{k.rsplit(".", 1)[-1]: planned[k] for k in keys if k in planned},
    }


def _step_overrides(steps: int) -> list[str]:
    """``train.steps``, and a warm-up of a tenth of them when that is shorter than the preset's
    (the presets warm up for 100 steps)."""
    return [f"train.steps={steps}", f"train.scheduler.warmup_steps={max(1, min(100, steps // 10))}"]


def oracle(case_name: str, data: dict[str, Path], work: Path, seed: int) -> dict[str, Any]:
    """The tuned classical pipeline's row (kept in the work folder: it depends on the data only)."""
    cached = work / f"oracle-{case_name}-seed{seed}.json"
    if cached.is_file():
        return dict(json.loads(cached.read_text()))
    case = CASES[case_name]
    images, truths = read_folder(data["test"] / "IM"), read_folder(data["test"] / "GT")
    started = time.monotonic()
    params, found = tuned_oracle(images, truths, case.spacing)
    row = {"case": case_name, "method": "oracle", **found, "params": params}
    row["tuning_seconds"] = round(time.monotonic() - started, 1)
    cached.write_text(json.dumps(row))
    return row


def case_data(work: Path, case_name: str, seed: int) -> dict[str, Path]:
    """The train, val and test folders of a case (written once per work folder and seed)."""
    root = work / f"data-{case_name}-seed{seed}"
    return {s: write_split(root, CASES[case_name], s, seed) for s in ("train", "val", "test")}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), help="default: 2d 3d")
    parser.add_argument(
        "--dims", nargs="+", type=int, choices=(2, 3), help="shorthand: 2 = 2d, 3 = 3d"
    )
    parser.add_argument("--minutes", type=float, default=8.0, help="train.max_minutes per model")
    parser.add_argument(
        "--methods", nargs="*", choices=list(METHODS), default=["boundary", "distance", "embedseg"]
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    parser.add_argument(
        "--steps", type=int, help="train.steps of every method (default: each preset's own)"
    )
    parser.add_argument("--workdir", type=Path, help="keep data, runs and oracle scores here")
    args = parser.parse_args(argv)
    cases = list(args.cases or []) + [f"{d}d" for d in args.dims or []]
    cases = list(dict.fromkeys(cases)) or ["2d", "3d"]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_instance_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows: list[dict[str, Any]] = []
    for case_name in cases:
        data = case_data(work, case_name, args.seed)
        best_classical = oracle(case_name, data, work, args.seed)
        rows.append(best_classical)
        print_row(best_classical)
        for method in args.methods:
            found, info = train_and_predict(
                method, case_name, data, args.minutes, args.seed, work, args.steps
            )
            margin = found["ap@0.50"] - best_classical["ap@0.50"]
            row = {"case": case_name, "method": method, **found, **info, "margin": margin}
            rows.append(row)
            print_row(row)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print_table(rows)
    print(
        json.dumps({"minutes": args.minutes, "steps": args.steps, "seed": args.seed, "rows": rows})
    )


def print_row(row: dict[str, Any]) -> None:
    extra = {k: v for k, v in row.items() if k not in ("case", "method", *SCORES)}
    print(
        f"{row['case']:>8} {row['method']:>9}  AP@0.5 {row['ap@0.50']:.3f}  "
        f"AP@0.5:0.95 {row['ap@0.50:0.95']:.3f}  PQ {row['pq@0.50']:.3f}  {extra}",
        flush=True,
    )


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """The rows as a Markdown table (benchmarks/README.md)."""
    print("| case | method | steps | train min | AP@0.5 | AP@0.5:0.95 | PQ | AP@0.5 - oracle |")
    print("|------|--------|------:|----------:|-------:|------------:|---:|----------------:|")
    for row in rows:
        margin = f"{row['margin']:+.3f}" if "margin" in row else ""
        print(
            f"| {row['case']} | {row['method']} | {row.get('steps', '')} | "
            f"{row.get('train_minutes', '')} | {row['ap@0.50']:.3f} | {row['ap@0.50:0.95']:.3f} | "
            f"{row['pq@0.50']:.3f} | {margin} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
