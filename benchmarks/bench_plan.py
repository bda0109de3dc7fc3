"""Fixed presets against the presets `bioim2im plan` writes, at equal time budgets.

Each case trains the shipped preset of its task (``fixed``) and the preset ``bioim2im plan
--budget MINUTES`` writes for the training images on this machine (``planned``), both with
``train.max_minutes = MINUTES``, and scores them on held-out images (for Noise2Void: on the
noisy image itself, against its clean original). Besides each case's own test images (8 in 2D,
4 and 2 stacks in 3D), ``--held-out K`` (default 4) scores the test images of K more data seeds
(40, 20 and 10 in all): on 8 images two training seeds of the *same* preset differ by 0.03
AP@0.5, so the verdict (``planned - fixed``) is taken on all of them:

- ``instance-2d``, ``instance-3d``, ``instance-3d-small``: crowded nuclei
  (:mod:`bench_instance`'s cases ``2d``, ``3d`` and ``3d-small``: 31 x 61 x 57 stacks with
  Z voxels 2.5x longer, smaller than the fixed preset's patch); AP@0.5, AP@0.5:0.95, PQ; the
  small anisotropic case also against the classical pipeline tuned on the test images;
- ``segmentation-2d``, ``segmentation-3d``: the same images, foreground masks; Dice;
- ``n2v-2d``: one 660 x 550 noisy image (synthetic nuclei, Poisson-Gaussian noise); PSNR,
  SSIM and ``periodic_peak`` (the share of the residual's energy in its strongest periodic
  component: a grid texture scores several hundredths, noise below 0.01).

    python benchmarks/bench_plan.py [--budget 8] [--cases ...] [--variants fixed planned]
        [--seed 0] [--train-seed N] [--held-out 4] [--side-by-side] [--workdir DIR]

Prints a row per run as it goes, then a Markdown table and, last, one JSON object with every
figure. The machine's load is printed too: a shared machine trains fewer steps in a budget.
``--side-by-side`` trains a case's variants at the same time, each in a process of its own with
an equal share of the cores, so that both see the same machine (one after the other, a change
of load between them — another job, a noisy neighbour — is counted for one of them only).
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


def held_out_seeds(seed: int, count: int) -> list[int]:
    """Data seeds of the held-out test images: none of them is a seed a case trains on."""
    return [1000 + 10 * seed + k for k in range(count)]


def case_data(work: Path, case: Case, seed: int, held_out: int = 0) -> dict[str, Path]:
    """The train/val/test folders of a case, and ``held-out-K``: the test folders of ``held_out``
    other data seeds (written once per work folder and seed)."""
    if case.data == "n2v":
        return n2v_data(work / f"data-n2v-seed{seed}", seed)
    found = bench_instance.case_data(work, case.data, seed)
    for k, other in enumerate(held_out_seeds(seed, held_out)):
        root = work / f"data-{case.data}-seed{other}"
        found[f"held-out-{k}"] = bench_instance.write_split(
            root, bench_instance.CASES[case.data], "test", other
        )
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
    name: str,
    case: Case,
    variant: str,
    data: dict[str, Path],
    budget: float,
    seed: int,
    work: Path,
    train_seed: int | None = None,
) -> dict[str, Any]:
    """Train one variant for ``budget`` minutes, predict the test images, score them."""
    from bioim2im.api import train

    info: dict[str, Any] = {}
    if variant == "planned":
        preset: str | Path = work / f"planned-{name}.toml"
        info.update(bench_instance.plan_preset(data["train"], Path(preset), case.task, budget))
    else:
        preset = case.fixed
    train_seed = seed if train_seed is None else train_seed
    tag = f"seed{seed}" if train_seed == seed else f"seed{seed}-train{train_seed}"
    run_dir = work / f"{variant}-{name}-{tag}-{budget}min"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [
        f"data.path={data['train']}",
        f"train.max_minutes={budget}",
        f"train.seed={train_seed}",
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


def score(
    case: Case, run_dir: Path, data: dict[str, Path], overrides: Sequence[str] = ()
) -> dict[str, float]:
    """The run's scores on the case's images; ``overrides`` change its preset for prediction
    (``predict.amp=bf16``, say)."""
    from bioim2im.api import predict as predict_with_defaults

    def predict(run: Path, image: np.ndarray) -> dict[str, np.ndarray]:
        return predict_with_defaults(run, image, overrides=overrides)

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
    per_image = {
        split: [
            image_scores(case, predict(run_dir, image)[case.head][0], truth)
            for image, truth in zip(*split_images(folder), strict=True)
        ]
        for split, folder in data.items()
        if split == "test" or split.startswith("held-out")
    }
    return summarise(per_image)


def split_images(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return bench_instance.read_folder(folder / "IM"), bench_instance.read_folder(folder / "GT")


def image_scores(case: Case, output: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    if case.task == "instance":
        return bench_instance.scores(output, truth)
    p, t = output > 0, truth > 0
    return {"dice": 2 * float((p & t).sum()) / max(float(p.sum() + t.sum()), 1.0)}


def summarise(per_image: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Each score's mean on the case's test images (its plain name), on the held-out images
    (``held-out NAME``) and on both (``all NAME``, the verdict), with the number of images."""
    held_out = [row for split, rows in per_image.items() if split != "test" for row in rows]
    together = per_image["test"] + held_out
    found: dict[str, float] = {"images": len(together)}
    for key in per_image["test"][0]:
        found[key] = float(np.mean([r[key] for r in per_image["test"]]))
        if held_out:
            found[f"held-out {key}"] = float(np.mean([r[key] for r in held_out]))
        found[f"all {key}"] = float(np.mean([r[key] for r in together]))
    return found


def oracle_held_out(row: dict[str, Any], case: Case, data: dict[str, Path]) -> dict[str, Any]:
    """The classical pipeline, with the parameters tuned on the test images, on every image."""
    spacing = bench_instance.CASES[case.data].spacing
    per_image = {
        split: [
            bench_instance.scores(bench_instance.classical(image, spacing, row["params"]), truth)
            for image, truth in zip(*split_images(folder), strict=True)
        ]
        for split, folder in data.items()
        if split.startswith("held-out")
    }
    if not per_image:
        return row
    held_out = [r for rows in per_image.values() for r in rows]
    tested = len(bench_instance.read_folder(data["test"] / "GT"))
    found = dict(row)
    for key in bench_instance.SCORES:
        found[f"held-out {key}"] = float(np.mean([r[key] for r in held_out]))
        # The oracle's own test images count with their tuned score.
        found[f"all {key}"] = (row[key] * tested + found[f"held-out {key}"] * len(held_out)) / (
            tested + len(held_out)
        )
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=8.0, help="minutes of training per run")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument(
        "--variants", nargs="+", choices=("fixed", "planned"), default=["fixed", "planned"]
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    parser.add_argument(
        "--train-seed",
        type=int,
        help="seed of the training alone (default: --seed): the spread between training seeds "
        "on the same images is the noise a planned - fixed difference has to clear",
    )
    parser.add_argument(
        "--held-out",
        type=int,
        default=4,
        help="also score the test images of this many other data seeds (the verdict is on all)",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="train a case's variants at the same time, each on an equal share of the cores",
    )
    parser.add_argument("--workdir", type=Path, help="keep data, runs and oracle scores here")
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)  # a side-by-side child's
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_plan_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}, budget {args.budget} min", flush=True)
    rows: list[dict[str, Any]] = []
    for name in args.cases:
        case = CASES[name]
        data = case_data(work, case, args.seed, args.held_out)
        if name == "instance-3d-small" and args.result is None:  # not again in each child
            oracle = oracle_held_out(
                bench_instance.oracle(case.data, data, work, args.seed), case, data
            )
            rows.append({**oracle, "case": name, "variant": "classical (tuned on test)"})
            print_row(rows[-1], case)
        if args.side_by_side and len(args.variants) > 1:
            found_all = side_by_side(name, args, work)
        else:
            found_all = {
                v: run(name, case, v, data, args.budget, args.seed, work, args.train_seed)
                for v in args.variants
            }
        for variant, found in found_all.items():
            rows.append({"case": name, "variant": variant, **found})
            print_row(rows[-1], case)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.result is not None:
        args.result.write_text(json.dumps(rows))
        return
    print_table(rows)
    seeds = {"seed": args.seed, "train_seed": args.train_seed}
    print(json.dumps({"budget": args.budget, **seeds, "rows": rows}))


def side_by_side(name: str, args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    """Each variant of case ``name`` trained by a child process of this script, all at once,
    each with an equal share of this machine's cores; their results by variant."""
    import subprocess

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = str(max(1, (cores or 1) // len(args.variants)))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    children = {}
    for variant in args.variants:
        result = work / f"result-{name}-{variant}.json"
        result.unlink(missing_ok=True)
        command = [
            sys.executable, __file__, "--cases", name, "--variants", variant,
            "--budget", str(args.budget), "--seed", str(args.seed),
            "--held-out", str(args.held_out), "--workdir", str(work), "--result", str(result),
        ]  # fmt: skip
        if args.train_seed is not None:
            command += ["--train-seed", str(args.train_seed)]
        log = (work / f"log-{name}-{variant}.txt").open("w")
        child = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        children[variant] = (child, result, log)
    found = {}
    for variant, (child, result, log) in children.items():
        code = child.wait()
        log.close()
        if code != 0:
            raise SystemExit(f"{name} {variant} failed: see {work}/log-{name}-{variant}.txt")
        rows = json.loads(result.read_text())
        found[variant] = {k: v for k, v in rows[-1].items() if k not in ("case", "variant")}
    return found


def print_row(row: dict[str, Any], case: Case) -> None:
    print(
        f"{row['case']:>18} {row['variant']:>9}  {case.metric} {row[case.metric]:.3f}  "
        + str({k: v for k, v in row.items() if k not in ("case", "variant", case.metric)}),
        flush=True,
    )


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """The rows as a Markdown table (benchmarks/README.md): the score on the case's test
    images, on the held-out ones and on all, and each case's planned - fixed on all."""
    print(
        "| case | variant | steps | train min | score | test | held-out | all | planned - fixed |"
    )
    print("|---|---|--:|--:|---|--:|--:|--:|--:|")
    fixed = {r["case"]: r for r in rows if r["variant"] == "fixed"}
    for row in rows:
        case = CASES[row["case"]]
        verdict = f"all {case.metric}" if f"all {case.metric}" in row else case.metric
        extra = ""
        if row["variant"] == "planned" and row["case"] in fixed:
            extra = f"{row[verdict] - fixed[row['case']][verdict]:+.3f}"
        details = ""
        if case.task == "instance":
            details = f" (all: AP@0.5:0.95 {row.get('all ap@0.50:0.95', row['ap@0.50:0.95']):.3f}"
            details += f", PQ {row.get('all pq@0.50', row['pq@0.50']):.3f})"
        if case.task == "n2v":
            details = f" (SSIM {row['ssim']:.3f}, periodic peak {row['periodic_peak']:.4f})"
        held = row.get(f"held-out {case.metric}")
        print(
            f"| {row['case']} | {row['variant']} | {row.get('steps', '')} | "
            f"{row.get('train_minutes', '')} | {case.metric}{details} | {row[case.metric]:.3f} | "
            f"{'' if held is None else f'{held:.3f}'} | {row[verdict]:.3f} | {extra} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
