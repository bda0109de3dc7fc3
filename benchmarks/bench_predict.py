"""Prediction of large 3D volumes: ``bioim2im predict`` vs MONAI's sliding window on an array.

The same volume (uint16, OME-Zarr on disk, generated slab by slab) and the same trained UNet go
through

- **bioim2im**: ``python -m bioim2im predict RUN --input VOLUME --output OUT`` (OME-Zarr out);
- **MONAI**: a script a user would write: read the volume into memory, normalise it with the
  preset's normalisation, ``monai.inferers.sliding_window_inference`` (same window, overlap,
  Gaussian blending and batch size), sigmoid, write the probabilities as zarr (same chunks and
  compression as bioim2im's output).

Each variant runs as its own process, timed from start to exit (imports, model loading, reading
and writing included), with its own CPU time and peak resident memory (``os.wait4``). Voxels/s
is the volume's voxels over that time; ``ratio`` is bioim2im's voxels/s over MONAI's (geometric
mean over the volumes). Two volumes, the second 4x the first, show how memory grows with the
volume. The two predictions are compared too: the window grids are the same, so they differ
only by the Gaussian weights' floor at window borders.

    python benchmarks/bench_predict.py            # 128x512x512 and 512x512x512, some minutes
    python benchmarks/bench_predict.py --quick    # 56x320x320 and 224x320x320
    python benchmarks/bench_predict.py --backend both --no-monai   # torch vs ONNX Runtime

``--backend`` chooses what runs bioim2im's network (``predict.backend``): ``torch`` (the
default), ``onnxruntime``, or ``both`` (then ``onnxruntime_vs_torch`` is ONNX Runtime's
voxels/s over torch's, per volume and as a geometric mean).

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SIZES = {"full": [(128, 512, 512), (512, 512, 512)], "quick": [(56, 320, 320), (224, 320, 320)]}
# Windows whose steps (24, 96, 96) divide both volumes: MONAI's window grid is then bioim2im's.
PATCH = (32, 128, 128)
CHUNKS = (32, 128, 128)

PRESET = """
extends = "segmentation-3d"
[data]
path = "{data}"
patch_size = [{patch}]
batch_size = 2
num_workers = 0
augment = []
[model]
features = 8
[model.backbone]
name = "unet"
channels = [8, 16, 32]
strides = [2, 2]
num_res_units = 0
[model.heads.seg]
name = "conv"
postprocess = [{{ name = "sigmoid" }}]
metrics = []
[train]
steps = 4
val_every = 4
checkpoint_every = 4
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


def train_model(root: Path) -> Path:
    """A small 3D UNet trained for a few steps (its weights' quality does not matter here)."""
    from bioim2im.api import train
    from bioim2im.data.synthetic import write_dataset

    run = root / "run"
    if (run / "checkpoints" / "last.pt").is_file():
        return run
    data = write_dataset(
        root / "data", kind="nuclei", n_images=2, shape=PATCH, seed=0, label_kind="semantic"
    )
    preset = root / "bench.toml"
    preset.write_text(PRESET.format(data=data, patch=", ".join(map(str, PATCH))))
    train(preset, run_dir=run)
    return run


def write_volume(path: Path, shape: tuple[int, ...]) -> Path:
    """A uint16 OME-Zarr volume of synthetic nuclei, written one slab of chunks at a time."""
    from bioim2im.data.synthetic import nuclei
    from bioim2im.io import OmeZarrStreamWriter

    if path.exists():
        return path
    tile, _ = nuclei((CHUNKS[0], 256, 256), seed=1)
    tile = (np.clip(tile, 0, None) * 1000 + 100).astype(np.uint16)
    writer = OmeZarrStreamWriter(path, resume=False)
    image = writer.create_image(None, shape=shape, dtype=np.uint16, axes="ZYX", chunks=CHUNKS)
    reps = [math.ceil(n / t) for n, t in zip(shape[1:], tile.shape[1:], strict=True)]
    plane = np.tile(tile, (1, *reps))[:, : shape[1], : shape[2]]
    for z in range(0, shape[0], CHUNKS[0]):
        slab = np.roll(plane, z, axis=2)[: min(CHUNKS[0], shape[0] - z)]
        image.write((slice(z, z + len(slab)), slice(None), slice(None)), slab)
    writer.finalize()
    return path


def monai_worker(run: Path, volume: Path, output: Path) -> None:
    """The MONAI variant (runs in its own process)."""
    import numcodecs
    import torch
    import zarr
    from monai.inferers import sliding_window_inference

    from bioim2im.data.preparation import preparation
    from bioim2im.prediction.trained_model import load_model

    model = load_model(run)
    settings = model.preset.predict
    network = model.network
    image = zarr.open_array(volume / "0", mode="r")[:]
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
        )
        probabilities = torch.sigmoid(logits)[0].numpy()
    out = zarr.create_array(
        output,
        shape=probabilities.shape,
        dtype=np.float32,
        chunks=(1, *CHUNKS),
        zarr_format=2,
        compressors=numcodecs.Zstd(level=3),
        overwrite=True,
    )
    out[:] = probabilities


def run_measured(command: list[str]) -> dict[str, float]:
    """Run ``command``; its wall time, CPU time (user + system) and peak resident memory (MiB)."""
    started = time.monotonic()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {process.returncode}")
    # ru_maxrss is in KiB on Linux.
    cpu = usage.ru_utime + usage.ru_stime
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_mib": usage.ru_maxrss / 1024}


def compare(ours: Path, theirs: Path) -> tuple[float, float]:
    """Mean and largest difference between the two predictions, over a few slabs."""
    import zarr

    a, b = zarr.open_array(ours, mode="r"), zarr.open_array(theirs, mode="r")
    step = max(1, a.shape[1] // 4)
    differences = [np.abs(a[:, z : z + 8] - b[:, z : z + 8]) for z in range(0, a.shape[1], step)]
    return float(np.mean(differences)), float(np.max(differences))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller volumes, a smoke run")
    parser.add_argument("--workdir", type=Path, help="keep data, model and outputs here")
    parser.add_argument(
        "--backend", choices=("torch", "onnxruntime", "both"), default="torch",
        help="what runs bioim2im's network (predict.backend)",
    )  # fmt: skip
    parser.add_argument("--no-monai", action="store_true", help="leave the MONAI variant out")
    parser.add_argument("--monai-worker", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.monai_worker:
        monai_worker(*args.monai_worker)
        return
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    root.mkdir(parents=True, exist_ok=True)
    run = train_model(root)
    rows: list[dict[str, Any]] = []
    backends = ["torch", "onnxruntime"] if args.backend == "both" else [args.backend]
    for shape in SIZES["quick" if args.quick else "full"]:
        name = "x".join(map(str, shape))
        volume = write_volume(root / f"volume_{name}.ome.zarr", shape)
        voxels = math.prod(shape)
        measured, outputs = {}, {}
        for backend in backends:
            # The first backend is "bioim2im"; a second one is named after itself.
            variant = "bioim2im" if backend == backends[0] else f"bioim2im-{backend}"
            folder = root / f"{variant}_{name}"
            measured[variant] = run_measured(
                [sys.executable, "-m", "bioim2im", "predict", str(run), "--input", str(volume),
                 "--output", str(folder), "--overwrite", "--set", f"predict.backend={backend}"]
            )  # fmt: skip
            outputs[variant] = folder / f"volume_{name}.ome.zarr" / "seg" / "0"
        reference = outputs["bioim2im"]
        if not args.no_monai:
            outputs["monai"] = root / f"monai_{name}.zarr"
            measured["monai"] = run_measured(
                [sys.executable, __file__, "--monai-worker", str(run), str(volume),
                 str(outputs["monai"])]
            )  # fmt: skip
        for variant, figures in measured.items():
            mean_difference, max_difference = (
                compare(reference, outputs[variant]) if variant != "bioim2im" else (0.0, 0.0)
            )
            rows.append(
                {
                    "volume": name,
                    "variant": variant,
                    "voxels": voxels,
                    "seconds": round(figures["seconds"], 2),
                    "cpu_seconds": round(figures["cpu_seconds"], 2),
                    "voxels_per_s": round(voxels / figures["seconds"]),
                    "peak_mib": round(figures["peak_mib"]),
                    # against bioim2im's first backend
                    "mean_abs_difference": mean_difference,
                    "max_abs_difference": max_difference,
                }
            )
    report(rows, backends)


def report(rows: list[dict[str, Any]], backends: list[str]) -> None:
    print(
        f"{'volume':>12} {'variant':>9} {'seconds':>8} {'CPU s':>7} {'Mvoxel/s':>9} {'peak MiB':>9}"
    )
    for row in rows:
        print(
            f"{row['volume']:>12} {row['variant']:>9} {row['seconds']:>8.1f} "
            f"{row['cpu_seconds']:>7.1f} {row['voxels_per_s'] / 1e6:>9.2f} {row['peak_mib']:>9}"
        )
    by = {(r["volume"], r["variant"]): r for r in rows}
    volumes = list(dict.fromkeys(r["volume"] for r in rows))
    summary: dict[str, Any] = {"rows": rows, "backends": backends}
    if len(backends) == 2:
        second = f"bioim2im-{backends[1]}"
        speedups = {
            v: by[v, second]["voxels_per_s"] / by[v, "bioim2im"]["voxels_per_s"] for v in volumes
        }
        summary[f"{backends[1]}_vs_{backends[0]}"] = math.exp(
            sum(math.log(r) for r in speedups.values()) / len(speedups)
        )
        summary[f"{backends[1]}_vs_{backends[0]}_by_volume"] = speedups
        summary[f"{backends[1]}_vs_{backends[0]}_cpu_by_volume"] = {
            v: by[v, "bioim2im"]["cpu_seconds"] / by[v, second]["cpu_seconds"] for v in volumes
        }
        print(f"{backends[1]}_vs_{backends[0]}: {summary[f'{backends[1]}_vs_{backends[0]}']:.3f}")
    if not any(r["variant"] == "monai" for r in rows):
        print(json.dumps(summary))
        return
    ratios = {
        v: by[v, "bioim2im"]["voxels_per_s"] / by[v, "monai"]["voxels_per_s"] for v in volumes
    }
    small, large = volumes[0], volumes[-1]
    summary |= {
        "ratio": math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios)),
        "ratio_by_volume": ratios,
        # CPU seconds MONAI needs per CPU second bioim2im needs: the work each does, which a
        # machine shared with other jobs disturbs less than wall time.
        "cpu_ratio_by_volume": {
            v: by[v, "monai"]["cpu_seconds"] / by[v, "bioim2im"]["cpu_seconds"] for v in volumes
        },
        "bioim2im_peak_mib": {v: by[v, "bioim2im"]["peak_mib"] for v in volumes},
        "monai_peak_mib": {v: by[v, "monai"]["peak_mib"] for v in volumes},
        "memory_vs_monai_large": by[large, "bioim2im"]["peak_mib"] / by[large, "monai"]["peak_mib"],
        "bioim2im_memory_growth_4x": by[large, "bioim2im"]["peak_mib"]
        / by[small, "bioim2im"]["peak_mib"]
        - 1,
    }
    for key in ("ratio", "memory_vs_monai_large", "bioim2im_memory_growth_4x"):
        print(f"{key}: {summary[key]:.3f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
