"""Prediction of large images: ``bioim2im predict`` vs a MONAI script, side by side.

The same image (uint16 OME-Zarr on disk, generated chunk by chunk, never whole in memory) and
the same trained network go through

- **bioim2im**: ``python -m bioim2im predict RUN --input IMAGE --output OUT`` (OME-Zarr out);
- **MONAI**: the script a user would write: read the whole image into memory, normalise it
  with the preset's normalisation, ``monai.inferers.sliding_window_inference`` (same window,
  overlap, Gaussian blending and batch size), sigmoid, write the float32 probabilities as zarr
  (same chunks and compression as bioim2im's output).

Each variant runs as its own process, timed from start to exit (imports, model loading, reading
and writing included), with its own CPU time and peak resident memory (``os.wait4``). With
``--repeats N`` each case runs both variants N times, alternating which goes first, and the
medians are reported, so that a change in the machine's load falls on both sides alike.
``ratio`` is bioim2im's voxels/s over MONAI's (geometric mean over the cases).

Cases (``--cases``, comma-separated; ``--quick`` shrinks every shape for a smoke run):

- ``wide-512`` 128 x 512 x 512, ``wide-1024`` 128 x 1024 x 1024, ``wide-2048`` 256 x 2048 x 2048
  (3D, wide in Y/X: blocks are cut along Y and X);
- ``deep`` 512 x 512 x 512 (3D, deep in Z: slabs along Z);
- ``wsi`` 16384 x 16384 (a 2D whole-slide image; the MONAI script holds it whole in memory).

3D: MONAI UNet 16-32-64-128 (strides 2, no residual units, instance norm, 16 features) + 1x1
conv head, window 32 x 128 x 128, output chunks 32 x 128 x 128. 2D: the same UNet in 2D,
window 256 x 256, output chunks 256 x 256. Overlap 0.25, 4 windows per batch, both.

    python benchmarks/bench_predict.py                        # wide-512, wide-1024, deep, wsi
    python benchmarks/bench_predict.py --cases wide-1024 --repeats 3
    python benchmarks/bench_predict.py --quick                # small shapes, a smoke run
    python benchmarks/bench_predict.py --set predict.memory_gb=1 --variants bioim2im
    python benchmarks/bench_predict.py --set predict.backend=onnxruntime   # ONNX Runtime

``--set`` passes settings to bioim2im's command (to compare levers); ``--device cuda`` runs both
on the GPU. ``--cluster local:2`` (or a scheduler's address) adds the variant ``cluster``: the
same command with ``--cluster``, whose overhead against the single process is reported (on a
machine of 2 cores: 2 single-threaded workers against one process of 2 threads), with the
largest difference between their outputs (0 when bit-identical: it needs a fixed layout,
``--set predict.channels_last=false``; the layout "auto" picks by timing, per process).
The last line printed is one JSON object with every figure.

    python benchmarks/bench_predict.py --cases wide-1024 --cluster local:2 --variants bioim2im
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# name: (full shape, quick shape)
CASES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "wide-512": ((128, 512, 512), (64, 256, 256)),
    "wide-1024": ((128, 1024, 1024), (64, 512, 512)),
    "wide-2048": ((256, 2048, 2048), (64, 1024, 1024)),
    "deep": ((512, 512, 512), (256, 256, 256)),
    "wsi": ((16384, 16384), (4096, 4096)),
}
DEFAULT_CASES = "wide-512,wide-1024,deep,wsi"
WINDOW = {3: (32, 128, 128), 2: (256, 256)}
CHUNKS = {3: (32, 128, 128), 2: (256, 256)}

PRESET = """
extends = "segmentation-{dims}d"
[data]
path = "{data}"
patch_size = [{patch}]
batch_size = 2
num_workers = 0
augment = []
normalize = {{ name = "percentile", lower = 1.0, upper = 99.8 }}
[model]
features = 16
[model.backbone]
name = "unet"
channels = [16, 32, 64, 128]
strides = [2, 2, 2]
num_res_units = 0
[model.heads.seg]
name = "conv"
postprocess = [{{ name = "sigmoid" }}]
metrics = []
[train]
steps = 2
val_every = 2
checkpoint_every = 2
checkpoint_metric = "val/loss"
checkpoint_mode = "min"
scheduler = {{ name = "constant" }}
[logging]
progress = "lines"
snapshots = false
[predict]
roi_size = [{patch}]
overlap = 0.25
batch_size = 4
"""


def train_model(root: Path, dims: int) -> Path:
    """A UNet trained for two steps (the quality of its weights does not matter here)."""
    from bioim2im.api import train
    from bioim2im.data.synthetic import write_dataset

    run = root / f"run-{dims}d"
    if (run / "checkpoints" / "last.pt").is_file():
        return run
    window = WINDOW[dims]
    data = write_dataset(
        root / f"data-{dims}d",
        kind="nuclei",
        n_images=2,
        shape=window,
        seed=0,
        label_kind="semantic",
    )
    preset = root / f"bench-{dims}d.toml"
    preset.write_text(PRESET.format(dims=dims, data=data, patch=", ".join(map(str, window))))
    train(preset, run_dir=run)
    return run


def write_image(path: Path, shape: tuple[int, ...]) -> Path:
    """A uint16 OME-Zarr image of synthetic nuclei, written one row of chunks at a time."""
    from bioim2im.data.synthetic import nuclei
    from bioim2im.io import OmeZarrStreamWriter

    if path.exists():
        return path
    dims = len(shape)
    chunks = CHUNKS[dims]
    tile_shape = (chunks[0], 256, 256) if dims == 3 else (1024, 1024)
    tile, _ = nuclei(tile_shape, seed=1)
    tile = (np.clip(tile, 0, None) * 1000 + 100).astype(np.uint16)
    writer = OmeZarrStreamWriter(path, resume=False)
    image = writer.create_image(
        None, shape=shape, dtype=np.uint16, axes="ZYX"[-dims:], chunks=chunks
    )
    # One row of chunks along the first axis at a time: a tiled plane, shifted per row.
    row_shape = (chunks[0], *shape[1:])
    reps = [math.ceil(n / t) for n, t in zip(row_shape, tile.shape, strict=True)]
    plane = np.tile(tile, reps)[tuple(slice(0, n) for n in row_shape)]
    for start in range(0, shape[0], chunks[0]):
        row = np.roll(plane, start, axis=-1)[: min(chunks[0], shape[0] - start)]
        image.write((slice(start, start + len(row)), *[slice(None)] * (dims - 1)), row)
    writer.finalize()
    return path


def monai_worker(run: Path, image_path: Path, output: Path, device: str) -> None:
    """The MONAI script (runs in its own process)."""
    import numcodecs
    import torch
    import zarr
    from monai.inferers import sliding_window_inference

    from bioim2im.data.preparation import preparation
    from bioim2im.formats import load_model

    model = load_model(run, device=device)
    settings = model.preset.predict
    network = model.network
    image = zarr.open_array(image_path / "0", mode="r")[:]
    normalize = preparation(model.preset, model.registry).normalize
    image = normalize(image[None].astype(np.float32))
    with torch.inference_mode():
        logits = sliding_window_inference(
            torch.from_numpy(image)[None],
            roi_size=model.roi_size,
            sw_batch_size=settings.batch_size,
            predictor=lambda batch: network(batch)["seg"],
            overlap=settings.overlap,
            mode="gaussian",
            sw_device=device,
            device="cpu",
        )
        probabilities = torch.sigmoid(logits)[0].numpy()
    out = zarr.create_array(
        output,
        shape=probabilities.shape,
        dtype=np.float32,
        chunks=(1, *CHUNKS[image.ndim - 1]),
        zarr_format=2,
        compressors=numcodecs.Zstd(level=3),
        overwrite=True,
    )
    out[:] = probabilities


def run_measured(command: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``command``; its wall time, CPU time (user + system) and peak resident memory (MiB)."""
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {code}")
    # ru_maxrss is in KiB on Linux.
    cpu = usage.ru_utime + usage.ru_stime
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_mib": usage.ru_maxrss / 1024}


def compare(ours: Path, theirs: Path) -> tuple[float, float]:
    """Mean and largest difference between the two predictions, over a few slabs."""
    import zarr

    a, b = zarr.open_array(ours, mode="r"), zarr.open_array(theirs, mode="r")
    step = max(1, a.shape[1] // 4)
    differences = [np.abs(a[:, i : i + 8] - b[:, i : i + 8]) for i in range(0, a.shape[1], step)]
    return float(np.mean(differences)), float(np.max(differences))


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"of {', '.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help="smaller shapes, a smoke run")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant per case")
    parser.add_argument("--variants", default="bioim2im,monai", help="bioim2im, monai or both")
    parser.add_argument("--set", action="append", default=[], help="bioim2im setting KEY=VALUE")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--workdir", type=Path, help="keep images, models and outputs here")
    parser.add_argument("--cluster", help="also run bioim2im with --cluster WHERE (local:2...)")
    parser.add_argument("--monai-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.monai_worker:
        run, image, output, device = args.monai_worker
        monai_worker(Path(run), Path(image), Path(output), device)
        return
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose among {', '.join(CASES)}")
    variants = args.variants.split(",")
    if args.cluster and "cluster" not in variants:
        variants.append("cluster")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # bioim2im predicts on a GPU when it sees one
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    differences: dict[str, tuple[float, float]] = {}
    cluster_differences: dict[str, tuple[float, float]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    loads: list[float] = []
    for number, case in enumerate(cases):
        shape = CASES[case][1 if args.quick else 0]
        shapes[case] = shape
        run = train_model(root, len(shape))
        name = "x".join(map(str, shape))
        image = write_image(root / f"image_{name}.ome.zarr", shape)
        ours_output = root / f"bioim2im_{name}"
        theirs_output = root / f"monai_{name}.zarr"
        commands = {
            "bioim2im": [
                sys.executable, "-m", "bioim2im", "predict", str(run), "--input", str(image),
                "--output", str(ours_output), "--overwrite",
                *[part for setting in args.set for part in ("--set", setting)],
            ],
            "monai": [
                sys.executable, __file__, "--monai-worker", str(run), str(image),
                str(theirs_output), args.device,
            ],
            "cluster": [
                sys.executable, "-m", "bioim2im", "predict", str(run), "--input", str(image),
                "--output", f"{ours_output}-cluster", "--overwrite", "--cluster",
                str(args.cluster),
                *[part for setting in args.set for part in ("--set", setting)],
            ],
        }  # fmt: skip
        for repeat in range(args.repeats):
            order = variants if (number + repeat) % 2 == 0 else variants[::-1]
            for variant in order:
                loads.append(load_average())
                figures = run_measured(commands[variant], env)
                runs.setdefault((case, variant), []).append(figures)
                print(
                    f"{case} {variant}: {figures['seconds']:.1f} s, "
                    f"{figures['peak_mib']:.0f} MiB, load {loads[-1]:.1f}",
                    file=sys.stderr,
                )
        if {"bioim2im", "monai"} <= set(variants):
            differences[case] = compare(
                ours_output / f"image_{name}.ome.zarr" / "seg" / "0", theirs_output
            )
        if {"bioim2im", "cluster"} <= set(variants):
            output = f"image_{name}.ome.zarr/seg/0"
            cluster_differences[case] = compare(
                Path(f"{ours_output}-cluster") / output, ours_output / output
            )
    report(runs, shapes, differences, variants, loads, args, cluster_differences)


def report(
    runs: dict[tuple[str, str], list[dict[str, float]]],
    shapes: dict[str, tuple[int, ...]],
    differences: dict[str, tuple[float, float]],
    variants: list[str],
    loads: list[float],
    args: argparse.Namespace,
    cluster_differences: dict[str, tuple[float, float]] | None = None,
) -> None:
    rows = []
    print(
        f"{'case':>10} {'shape':>16} {'variant':>9} {'seconds':>8} {'CPU s':>7} "
        f"{'Mvoxel/s':>9} {'peak MiB':>9}"
    )
    for (case, variant), figures in runs.items():
        voxels = math.prod(shapes[case])
        row = {
            "case": case,
            "shape": list(shapes[case]),
            "variant": variant,
            "runs": len(figures),
            **{
                key: round(statistics.median(f[key] for f in figures), 2)
                for key in ("seconds", "cpu_seconds", "peak_mib")
            },
            "all_seconds": [round(f["seconds"], 2) for f in figures],
        }
        row["voxels_per_s"] = round(voxels / row["seconds"])
        rows.append(row)
        print(
            f"{case:>10} {'x'.join(map(str, shapes[case])):>16} {variant:>9} "
            f"{row['seconds']:>8.1f} {row['cpu_seconds']:>7.1f} "
            f"{row['voxels_per_s'] / 1e6:>9.2f} {row['peak_mib']:>9.0f}"
        )
    summary: dict[str, Any] = {
        "rows": rows,
        "device": args.device,
        "repeats": args.repeats,
        "settings": args.set,
        "load_average": [round(min(loads), 2), round(max(loads), 2)] if loads else None,
    }
    if {"bioim2im", "cluster"} <= set(variants):
        by = {(r["case"], r["variant"]): r for r in rows}
        overhead = {
            c: by[c, "cluster"]["seconds"] / by[c, "bioim2im"]["seconds"] - 1 for c in shapes
        }
        summary["cluster"] = args.cluster
        summary["cluster_overhead"] = overhead
        summary["cluster_difference"] = {
            c: {"mean": d[0], "max": d[1]} for c, d in (cluster_differences or {}).items()
        }
        for case, value in overhead.items():
            print(f"{case}: --cluster {args.cluster} takes {value:+.1%} of one process's time")
    if {"bioim2im", "monai"} <= set(variants):
        by = {(r["case"], r["variant"]): r for r in rows}
        cases = list(shapes)
        speed = {c: by[c, "monai"]["seconds"] / by[c, "bioim2im"]["seconds"] for c in cases}
        memory = {c: by[c, "bioim2im"]["peak_mib"] / by[c, "monai"]["peak_mib"] for c in cases}
        summary["speed_ratio"] = speed
        summary["memory_ratio"] = memory
        summary["ratio"] = math.exp(sum(math.log(r) for r in speed.values()) / len(speed))
        summary["difference"] = {c: {"mean": d[0], "max": d[1]} for c, d in differences.items()}
        for case in cases:
            print(f"{case}: speed {speed[case]:.2f}x, peak memory {memory[case]:.2f}x MONAI's")
        print(f"ratio (geometric mean of speeds): {summary['ratio']:.3f}")
    peaks = {r["case"]: r["peak_mib"] for r in rows if r["variant"] == "bioim2im"}
    if "wide-512" in peaks and "wide-1024" in peaks:
        summary["bioim2im_memory_growth_wide"] = peaks["wide-1024"] / peaks["wide-512"] - 1
        print(f"bioim2im memory growth wide-512 -> wide-1024: "
              f"{summary['bioim2im_memory_growth_wide']:+.1%}")  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
