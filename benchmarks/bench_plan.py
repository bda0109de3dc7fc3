"""Fixed presets against the presets `bioim2im plan` writes, at equal time budgets.

Each case trains the shipped preset of its task (``fixed``) and the preset ``bioim2im plan
--budget MINUTES`` writes for the training images on this machine (``planned``), both with
``train.max_minutes = MINUTES``, and scores them on held-out images (for Noise2Void: on the
noisy image itself, against its clean original):

- ``instance-2d``, ``instance-3d``, ``instance-3d-small``: crowded nuclei
  (:mod:`bench_instance`'s cases ``2d``, ``3d`` and ``3d-small``: 31 x 61 x 57 stacks with
  Z voxels 2.5x longer, smaller than the fixed preset's patch); AP@0.5, AP@0.5:0.95, PQ; the
  small anisotropic case also against the classical pipeline tuned on the test images;
- ``segmentation-2d``, ``segmentation-3d``: the same images, foreground masks; Dice;
- ``n2v-2d``: one 660 x 550 noisy image (synthetic nuclei, Poisson-Gaussian noise); PSNR,
  SSIM and ``periodic_peak`` (the share of the residual's energy in its strongest periodic
  component: a grid texture scores several hundredths, noise below 0.01).

    python benchmarks/bench_plan.py [--budget 8] [--cases ...] [--variants fixed planned]
        [--seed 0] [--workdir DIR]

Prints a row per run as it goes, then a Markdown table and, last, one JSON object with every
figure. The machine's load is printed too: a shared machine trains fewer steps in a budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_instance


@dataclass(frozen=True)
class Case:
    task: str
    fixed: str
    """The shipped preset the planned one is compared with."""
    data: str
    """bench_instance's case of the images, or "n2v"."""
    head: str
    metric: str
    """The score the table compares."""


CASES: dict[str, Case] = {
    "instance-2d": Case("instance", "instance-2d", "2d", "seg", "ap@0.50"),
    "instance-3d": Case("instance", "instance-3d", "3d", "seg", "ap@0.50"),
    "instance-3d-small": Case("instance", "instance-3d", "3d-small", "seg", "ap@0.50"),
    "segmentation-2d": Case("segmentation", "segmentation-2d", "2d", "seg", "dice"),
    "segmentation-3d": Case("segmentation", "segmentation-3d", "3d", "seg", "dice"),
    "n2v-2d": Case("n2v", "n2v-2d", "n2v", "restored", "psnr"),
}
N2V_SHAPE = (660, 550)


# ---- data ------------------------------------------------------------------------------------


def case_data(work: Path, case: Case, seed: int) -> dict[str, Path]:
    """The train/val/test folders of a case (written once per work folder and seed)."""
    if case.data == "n2v":
        return n2v_data(work / f"data-n2v-seed{seed}", seed)
    found = bench_instance.case_data(work, case.data, seed)
    if case.task != "segmentation":
        return found
    return {
        s: masks(folder, work / f"data-{case.data}-masks-seed{seed}" / s)
        for s, folder in found.items()
    }


def masks(folder: Path, target: Path) -> Path:
    """``folder``'s images with their labels as foreground masks, under ``target``."""
    from bioim2im.io import open_image
    from bioim2im.io.tiff import write_tiff

    if (target / "GT").is_dir():
        return target
    for label in sorted((folder / "GT").glob("*.tif")):
        lazy = open_image(label)
        mask = (np.asarray(lazy.read()) > 0).astype(np.uint8)
        write_tiff(target / "GT" / label.name, mask, axes=lazy.axes, voxel_size=lazy.voxel_size)
        (target / "IM").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "IM" / label.name, target / "IM" / label.name)
    return target


def n2v_data(root: Path, seed: int) -> dict[str, Path]:
    """One noisy image to denoise (``train/IM``) and its clean original (``clean``)."""
    from bioim2im.data.synthetic import restoration_pair
    from bioim2im.io.tiff import write_tiff

    if not (root / "clean" / "img.tif").is_file():
        noisy, clean = restoration_pair(N2V_SHAPE, seed=seed + 3)
        write_tiff(root / "train" / "IM" / "img.tif", noisy, axes="YX", compression="none")
        write_tiff(root / "clean" / "img.tif", clean, axes="YX", compression="none")
    return {"train": root / "train", "clean": root / "clean"}


# ---- runs ------------------------------------------------------------------------------------


def run(
    name: str, case: Case, variant: str, data: dict[str, Path], budget: float, seed: int, work: Path
) -> dict[str, Any]:
    """Train one variant for ``budget`` minutes, predict the test images, score them."""
    from bioim2im.api import train

    info: dict[str, Any] = {}
    if variant == "planned":
        preset: str | Path = work / f"planned-{name}.toml"
        info.update(bench_instance.plan_preset(data["train"], Path(preset), case.task, budget))
    else:
        preset = case.fixed
    run_dir = work / f"{variant}-{name}-seed{seed}-{budget}min"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [
        f"data.path={data['train']}",
        f"train.max_minutes={budget}",
        f"train.seed={seed}",
        "logging.progress=lines",
        "logging.snapshots=false",
    ]
    if "val" in data:
        overrides.append(f"data.val_path={data['val']}")
    started = time.monotonic()
    train(preset, overrides=overrides, run_dir=run_dir)
    info["train_minutes"] = round((time.monotonic() - started) / 60, 2)
    info["load"] = round(os.getloadavg()[1], 1)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    info["steps"] = max((r["step"] for r in records), default=0)
    info.update(score(case, run_dir, data))
    return info


def score(case: Case, run_dir: Path, data: dict[str, Path]) -> dict[str, float]:
    from bioim2im.api import predict

    if case.task == "n2v":
        from bioim2im.metrics.regression import periodic_peak, psnr, ssim

        noisy = bench_instance.read_folder(data["train"] / "IM")[0]
        clean = bench_instance.read_folder(data["clean"])[0].astype(np.float64)
        out = predict(run_dir, noisy)[case.head][0].astype(np.float64)
        # The output is on the input's normalised scale: compared at its best linear fit.
        a, b = np.polyfit(out.ravel(), clean.ravel(), 1)
        fitted = a * out + b
        return {
            "psnr": psnr(fitted, clean),
            "ssim": ssim(fitted, clean),
            "periodic_peak": periodic_peak(fitted - clean),
        }
    images = bench_instance.read_folder(data["test"] / "IM")
    truths = bench_instance.read_folder(data["test"] / "GT")
    outputs = [predict(run_dir, image)[case.head][0] for image in images]
    if case.task == "instance":
        return bench_instance.mean_scores(
            [bench_instance.scores(o, t) for o, t in zip(outputs, truths, strict=True)]
        )
    dice = []
    for out, truth in zip(outputs, truths, strict=True):
        p, t = out > 0, truth > 0
        dice.append(2 * float((p & t).sum()) / max(float(p.sum() + t.sum()), 1.0))
    return {"dice": float(np.mean(dice))}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=8.0, help="minutes of training per run")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument(
        "--variants", nargs="+", choices=("fixed", "planned"), default=["fixed", "planned"]
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    parser.add_argument("--workdir", type=Path, help="keep data, runs and oracle scores here")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_plan_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}, budget {args.budget} min", flush=True)
    rows: list[dict[str, Any]] = []
    for name in args.cases:
        case = CASES[name]
        data = case_data(work, case, args.seed)
        if name == "instance-3d-small":
            oracle = bench_instance.oracle(case.data, data, work, args.seed)
            rows.append({**oracle, "case": name, "variant": "classical (tuned on test)"})
            print_row(rows[-1], case)
        for variant in args.variants:
            found = run(name, case, variant, data, args.budget, args.seed, work)
            rows.append({"case": name, "variant": variant, **found})
            print_row(rows[-1], case)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print_table(rows)
    print(json.dumps({"budget": args.budget, "seed": args.seed, "rows": rows}))


def print_row(row: dict[str, Any], case: Case) -> None:
    print(
        f"{row['case']:>18} {row['variant']:>9}  {case.metric} {row[case.metric]:.3f}  "
        + str({k: v for k, v in row.items() if k not in ("case", "variant", case.metric)}),
        flush=True,
    )


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """The rows as a Markdown table (benchmarks/README.md), each case's planned - fixed."""
    print("| case | variant | steps | train min | score | value | planned - fixed |")
    print("|------|---------|------:|----------:|-------|------:|----------------:|")
    fixed = {r["case"]: r for r in rows if r["variant"] == "fixed"}
    for row in rows:
        case = CASES[row["case"]]
        value = row[case.metric]
        extra = ""
        if row["variant"] == "planned" and row["case"] in fixed:
            extra = f"{value - fixed[row['case']][case.metric]:+.3f}"
        details = ""
        if case.task == "instance":
            details = f" (AP@0.5:0.95 {row['ap@0.50:0.95']:.3f}, PQ {row['pq@0.50']:.3f})"
        if case.task == "n2v":
            details = f" (SSIM {row['ssim']:.3f}, periodic peak {row['periodic_peak']:.4f})"
        print(
            f"| {row['case']} | {row['variant']} | {row.get('steps', '')} | "
            f"{row.get('train_minutes', '')} | {case.metric}{details} | {value:.3f} | {extra} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
