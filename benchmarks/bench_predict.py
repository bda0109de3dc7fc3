"""Prediction of large images: ``bioim2im predict`` vs a MONAI script, per shipped preset's network.

The same image (uint16 OME-Zarr on disk, generated chunk by chunk, never whole in memory) and
the same network -- built by bioim2im from a shipped preset, exactly as that preset builds it,
with the same weights on both sides -- go through

- **bioim2im**: ``python -m bioim2im predict RUN --input IMAGE --output OUT`` (OME-Zarr out);
- **bf16**: the same command with ``--set predict.amp=bf16`` (the network in bf16 autocast, a
  lever for CPUs with native bf16: the outputs differ from full precision's, see the README);
- **onnxruntime**: the same command with ``--set predict.backend=onnxruntime``;
- **MONAI**: the script a user would write: load the same ``nn.Module`` (same weights), read
  the whole image into memory, normalise it with the preset's normalisation,
  ``monai.inferers.sliding_window_inference`` (same window, overlap, Gaussian blending and batch
  size), the head's activation (sigmoid, softmax or none), write the float32 result as zarr
  (same chunks and compression as bioim2im's output).

Each variant runs as its own process, timed from start to exit (imports, model loading, reading
and writing included), with its own CPU time and peak resident memory (``os.wait4`` in a small
launcher process). With ``--repeats N`` each case runs every variant N times, alternating the
order, and the medians are reported, so that a change in the machine's load falls on all sides
alike. Each row gives the speed of bioim2im (and of ONNX Runtime) over the script's (their
seconds over ours).

Networks (``--networks``, comma-separated; default all): one per distinct network the shipped
presets build (``--list`` prints them). Every head writes float32 values (probabilities after
a sigmoid or softmax, raw values otherwise), so that both sides write the same thing; the
network, its weights and the window settings are the preset's.

Cases (``--cases``; each network runs those of its dimensionality; ``--quick`` shrinks every
shape for a smoke run):

- ``wide-512`` 128 x 512 x 512, ``wide-1024`` 128 x 1024 x 1024, ``wide-2048`` 256 x 2048 x 2048
  (3D, wide in Y/X: blocks are cut along Y and X);
- ``deep`` 512 x 512 x 512 (3D, deep in Z: slabs along Z);
- ``slide-4096`` 4096 x 4096, ``wsi`` 16384 x 16384 (2D; the script holds the image whole in
  memory).

Windows 32 x 128 x 128 (3D) and 256 x 256 (2D), output chunks the same, overlap 0.25, 4 windows
per batch, Gaussian blending.

    python benchmarks/bench_predict.py                         # every network, every case
    python benchmarks/bench_predict.py --networks segmentation-3d,segmentation-2d --cases wide-512,wsi
    python benchmarks/bench_predict.py --quick                 # small shapes, a smoke run
    python benchmarks/bench_predict.py --variants bioim2im,monai --repeats 3
    python benchmarks/bench_predict.py --set predict.channels_last=false --variants bioim2im

``predict.compile = "auto"`` compiles the network when that saves more than it costs; by default
(``--compile-cache cold``) every bioim2im run starts with an empty Inductor cache, as the first
prediction on a machine does; ``--compile-cache warm`` shares one cache between the runs, as
later predictions of the same network and window do.

``--set`` passes settings to bioim2im's command (to compare levers); ``--device cuda`` runs all
on the GPU. ``--cluster local:2`` (or a scheduler's address) adds the variant ``cluster``: the
same command with ``--cluster``, whose overhead against the single process is reported (on a
machine of 2 cores: 2 single-threaded workers against one process of 2 threads), with the
largest difference between their outputs (0 when bit-identical: it needs a fixed layout,
``--set predict.channels_last=false``; the layout "auto" picks by timing, per process).
The last line printed is one JSON object with every figure.

    python benchmarks/bench_predict.py --networks segmentation-3d --cases wide-1024 \
        --cluster local:2 --variants bioim2im
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
    "slide-4096": ((4096, 4096), (1024, 1024)),
    "wsi": ((16384, 16384), (4096, 4096)),
}
DEFAULT_CASES = "wide-512,wide-1024,deep,wsi"
WINDOW = {3: (32, 128, 128), 2: (256, 256)}
CHUNKS = {3: (32, 128, 128), 2: (256, 256)}
VARIANTS = ("bioim2im", "bf16", "onnxruntime", "monai")


def _probabilities(head: str, activation: str) -> list[str]:
    return [f"model.heads.{head}.postprocess=[{{name = '{activation}'}}]"]


def _raw(head: str) -> list[str]:
    return [f"model.heads.{head}.postprocess=[]", f"model.heads.{head}.output_dtype='float32'"]


# One entry per distinct network the shipped presets build: the preset, the settings that make
# every head write float32 values (the network itself is untouched, except where a variant is
# named), each head's activation in the script, and the presets that build the same network.
NETWORKS: dict[str, dict[str, Any]] = {
    "segmentation-3d": {
        "preset": "segmentation-3d",
        "set": _probabilities("seg", "sigmoid"),
        "heads": {"seg": "sigmoid"},
        "about": "UNet 16-128, 1 residual unit, 1-channel sigmoid head",
    },
    "segmentation-3d-softmax": {
        "preset": "segmentation-3d",
        "set": [
            "model.backbone.num_res_units=2",
            "model.heads.seg.out_channels=2",
            "model.heads.seg.loss={name = 'dice_ce', sigmoid = false, softmax = true, "
            "to_onehot_y = true}",
            *_probabilities("seg", "softmax"),
        ],
        "heads": {"seg": "softmax"},
        "about": "segmentation-3d with 2 residual units and 2 classes (softmax): issue 24's",
    },
    "embedseg-3d": {
        "preset": "embedseg-3d",
        "set": _raw("seg"),
        "heads": {"seg": "none"},
        "about": "UNet 16-128, no residual units, EmbedSeg head (7 channels); also instance-3d",
    },
    "labelfree-3d": {
        "preset": "labelfree-3d",
        "set": _raw("fluo"),
        "heads": {"fluo": "none"},
        "about": "UNet 16-64, 1 residual unit, regression head",
    },
    "multitask-3d": {
        "preset": "multitask-3d",
        "set": _probabilities("seg", "sigmoid") + _raw("fluo") + _raw("mip"),
        # The script predicts the two full-grid heads: a sliding window cannot drop an axis.
        "heads": {"seg": "sigmoid", "fluo": "none"},
        "about": "UNet 16-64, 1 residual unit; sigmoid, regression and 3D->2D projection heads",
    },
    "superres-3d": {
        "preset": "superres-3d",
        "set": _raw("highres"),
        "heads": {"highres": "none"},
        "about": "UNet 32-128, 1 residual unit, 2x upsampling head",
    },
    "cellmap-3d": {
        "preset": "cellmap-3d",
        "set": _probabilities("seg", "sigmoid"),
        "heads": {"seg": "sigmoid"},
        "about": "UNet 32-256, 1 residual unit, 32 features, 2-class sigmoid head (plugin)",
    },
    "segmentation-2d": {
        "preset": "segmentation-2d",
        "set": _probabilities("seg", "sigmoid"),
        "heads": {"seg": "sigmoid"},
        "about": "UNet 16-128, 2 residual units, 1-channel sigmoid head",
    },
    "embedseg-2d": {
        "preset": "embedseg-2d",
        "set": _raw("seg"),
        "heads": {"seg": "none"},
        "about": "UNet 16-128, no residual units, EmbedSeg head (5 channels); also instance-2d",
    },
    "restoration-2d": {
        "preset": "restoration-2d",
        "set": _raw("restored"),
        "heads": {"restored": "none"},
        "about": "UNet 32-128, 1 residual unit, regression head",
    },
    "n2v-2d": {
        "preset": "n2v-2d",
        "set": _raw("restored"),
        "heads": {"restored": "none"},
        "about": "N2V2 U-Net 32-128: blur-pool, interpolating upsampling, no top skip",
    },
    "pix2pix-2d": {
        "preset": "pix2pix-2d",
        "set": _raw("translated"),
        "heads": {"translated": "none"},
        "about": "UNet 32-256, 1 residual unit, 32 features, regression head; also cyclegan-2d",
    },
    "cellmap-2d": {
        "preset": "cellmap-2d",
        "set": _probabilities("seg", "sigmoid"),
        "heads": {"seg": "sigmoid"},
        "about": "UNet 32-512, 1 residual unit, 32 features, 2-class sigmoid head (plugin)",
    },
}


def network_dims(name: str) -> int:
    from bioim2im.config.loading import load_preset

    return load_preset(NETWORKS[name]["preset"]).spatial_dims


def make_model(root: Path, name: str) -> Path:
    """A run directory whose checkpoint holds network ``name`` as its preset builds it (seeded
    initial weights: their quality does not matter here) with the benchmark's window settings."""
    import torch

    from bioim2im.config.loading import load_preset, to_toml
    from bioim2im.model.checkpoint import save_checkpoint
    from bioim2im.model.network import build_model
    from bioim2im.plugin.manager import get_registry

    run = root / f"run-{name}"
    checkpoint = run / "checkpoints" / "last.pt"
    if checkpoint.is_file():
        return run
    spec = NETWORKS[name]
    registry = get_registry()
    dims = load_preset(spec["preset"], registry=registry).spatial_dims
    window = ", ".join(map(str, WINDOW[dims]))
    settings = [
        *spec["set"],
        f"data.patch_size=[{window}]",
        f"predict.roi_size=[{window}]",
        "predict.overlap=0.25",
        "predict.blend='gaussian'",
        "predict.batch_size=4",
    ]
    preset = load_preset(spec["preset"], settings, registry)
    torch.manual_seed(0)
    network = build_model(preset, registry)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": network.state_dict(), "preset": to_toml(preset)}, checkpoint)
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


def monai_worker(run: Path, image_path: Path, output: Path, device: str, heads: str) -> None:
    """The MONAI script (runs in its own process): ``heads`` is ``head:activation,...``."""
    import numcodecs
    import torch
    import zarr
    from monai.inferers import sliding_window_inference

    from bioim2im.data.preparation import preparation
    from bioim2im.formats import load_model

    activations = dict(item.split(":") for item in heads.split(","))
    model = load_model(run, device=device)
    settings = model.preset.predict
    network = model.network
    image = zarr.open_array(image_path / "0", mode="r")[:]
    normalize = preparation(model.preset, model.registry).normalize
    image = normalize(image[None].astype(np.float32))
    with torch.inference_mode():
        outputs = sliding_window_inference(
            torch.from_numpy(image)[None],
            roi_size=model.roi_size,
            sw_batch_size=settings.batch_size,
            predictor=lambda batch: {h: v for h, v in network(batch).items() if h in activations},
            overlap=settings.overlap,
            mode="gaussian",
            sw_device=device,
            device="cpu",
        )
    dims = image.ndim - 1
    for head, activation in activations.items():
        values = outputs[head]
        if activation == "sigmoid":
            values = torch.sigmoid(values)
        elif activation == "softmax":
            values = torch.softmax(values, dim=1)
        result = values[0].numpy()
        scale = [o // i for o, i in zip(result.shape[1:], image.shape[1:], strict=True)]
        out = zarr.create_array(
            output / head,
            shape=result.shape,
            dtype=np.float32,
            chunks=(1, *[c * s for c, s in zip(CHUNKS[dims], scale, strict=True)]),
            zarr_format=2,
            compressors=numcodecs.Zstd(level=3),
            overwrite=True,
        )
        out[:] = result
        del values, result


# Started by the benchmark (``python -S``, a few MiB), it starts the measured command and writes
# the command's exit status, CPU seconds and peak memory (KiB) to the file it is given. On Linux
# a process started straight from the benchmark inherits the benchmark's own high-water mark
# (it survives fork and exec): the benchmark, grown past 1 GiB by comparing outputs, made every
# later command's peak read at least that.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_utime + usage.ru_stime} "
                 f"{usage.ru_maxrss}")
"""


def run_measured(command: list[str], env: dict[str, str] | None = None) -> dict[str, float] | None:
    """Run ``command``; its wall time, CPU time (user + system) and peak resident memory (MiB),
    or None when it fails (the failure is printed, the benchmark goes on)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "usage"
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(report)]
        started = time.monotonic()
        subprocess.run([*launcher, *command], env=env, stdout=subprocess.DEVNULL, check=False)
        seconds = time.monotonic() - started
        code, cpu, peak_kib = report.read_text().split()
    if int(code) != 0:
        print(f"FAILED (exit status {code}): {' '.join(command)}", file=sys.stderr)
        return None
    return {"seconds": seconds, "cpu_seconds": float(cpu), "peak_mib": int(peak_kib) / 1024}


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
    parser.add_argument("--networks", default=",".join(NETWORKS), help="of --list")
    parser.add_argument("--list", action="store_true", help="print the networks and stop")
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"of {', '.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help="smaller shapes, a smoke run")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant per case")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--set", action="append", default=[], help="bioim2im setting KEY=VALUE")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--workdir", type=Path, help="keep images, models and outputs here")
    parser.add_argument(
        "--compile-cache",
        choices=("cold", "warm"),
        default="cold",
        help="cold: each bioim2im run starts with an empty torch.compile cache (a first run on "
        "a machine); warm: the runs share one (later runs of the same network and window)",
    )
    parser.add_argument("--cluster", help="also run bioim2im with --cluster WHERE (local:2...)")
    parser.add_argument("--monai-worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from bioim2im.errors import UserError

    if args.monai_worker:
        run, image, output, device, heads = args.monai_worker
        monai_worker(Path(run), Path(image), Path(output), device, heads)
        return
    if args.list:
        for name, spec in NETWORKS.items():
            print(f"{name:>24}  {spec['about']}")
        return
    networks = args.networks.split(",")
    cases = args.cases.split(",")
    variants = args.variants.split(",")
    if args.cluster and "cluster" not in variants:
        variants.append("cluster")
    for kind, chosen, known in (
        ("networks", networks, NETWORKS),
        ("cases", cases, CASES),
        ("variants", variants, (*VARIANTS, "cluster")),
    ):
        unknown = [c for c in chosen if c not in known]
        if unknown:
            parser.error(f"unknown {kind} {unknown}; choose among {', '.join(known)}")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # bioim2im predicts on a GPU when it sees one
    runs: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    differences: dict[tuple[str, str, str], tuple[float, float]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    loads: list[float] = []
    number = 0
    for network in networks:
        try:
            dims = network_dims(network)
        except UserError as error:  # a plugin's preset, the plugin not installed
            print(f"{network} left out: {error}", file=sys.stderr)
            continue
        run = make_model(root, network)
        heads = NETWORKS[network]["heads"]
        first = next(iter(heads))
        for case in cases:
            shape = CASES[case][1 if args.quick else 0]
            if len(shape) != dims:
                continue
            shapes[case] = shape
            name = "x".join(map(str, shape))
            image = write_image(root / f"image_{name}.ome.zarr", shape)
            outputs = {v: root / f"{v}_{network}_{name}" for v in (*VARIANTS, "cluster")}
            settings = [part for setting in args.set for part in ("--set", setting)]
            ours = [
                sys.executable, "-m", "bioim2im", "predict", str(run), "--input", str(image),
                "--overwrite", *settings,
            ]  # fmt: skip
            commands = {
                "bioim2im": [*ours, "--output", str(outputs["bioim2im"])],
                "bf16": [
                    *ours, "--output", str(outputs["bf16"]), "--set", "predict.amp=bf16",
                ],
                "onnxruntime": [
                    *ours, "--output", str(outputs["onnxruntime"]),
                    "--set", "predict.backend=onnxruntime",
                ],
                "cluster": [
                    *ours, "--output", str(outputs["cluster"]), "--cluster", str(args.cluster),
                ],
                "monai": [
                    sys.executable, __file__, "--monai-worker", str(run), str(image),
                    str(outputs["monai"]), args.device,
                    ",".join(f"{h}:{a}" for h, a in heads.items()),
                ],
            }  # fmt: skip
            for repeat in range(args.repeats):
                # Rotate the order, so that a change of load falls on every variant alike.
                shift = (number + repeat) % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    loads.append(load_average())
                    cache = (
                        "shared" if args.compile_cache == "warm" else f"{variant}-{number}-{repeat}"
                    )
                    env["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor" / cache)
                    figures = run_measured(commands[variant], env)
                    if figures is None:
                        continue
                    runs.setdefault((network, case, variant), []).append(figures)
                    print(
                        f"{network} {case} {variant}: {figures['seconds']:.1f} s, "
                        f"{figures['cpu_seconds']:.1f} CPU s, {figures['peak_mib']:.0f} MiB, "
                        f"load {loads[-1]:.1f}",
                        file=sys.stderr,
                    )
            number += 1
            theirs = outputs["monai"] / first
            written = {v: outputs[v] / f"image_{name}.ome.zarr" / first / "0" for v in outputs}
            for variant in ("bioim2im", "bf16", "onnxruntime"):
                if (network, case, variant) in runs and (network, case, "monai") in runs:
                    differences[network, case, variant] = compare(written[variant], theirs)
            if (network, case, "cluster") in runs and (network, case, "bioim2im") in runs:
                differences[network, case, "cluster"] = compare(
                    written["cluster"], written["bioim2im"]
                )
    report(runs, shapes, differences, loads, args)


def report(
    runs: dict[tuple[str, str, str], list[dict[str, float]]],
    shapes: dict[str, tuple[int, ...]],
    differences: dict[Any, tuple[float, float]],
    loads: list[float],
    args: argparse.Namespace,
) -> None:
    rows = []
    print(
        f"{'network':>24} {'case':>10} {'shape':>16} {'variant':>11} {'seconds':>8} "
        f"{'CPU s':>7} {'Mvoxel/s':>9} {'peak MiB':>9} {'speed':>6} {'CPU':>6} {'memory':>6}"
    )
    for (network, case, variant), figures in runs.items():
        voxels = math.prod(shapes[case])
        row: dict[str, Any] = {
            "network": network,
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
    by = {(r["network"], r["case"], r["variant"]): r for r in rows}
    for row in rows:
        script = by.get((row["network"], row["case"], "monai"))
        single = by.get((row["network"], row["case"], "bioim2im"))
        if row["variant"] == "cluster" and single is not None:
            row["cluster_overhead"] = round(row["seconds"] / single["seconds"] - 1, 3)
            found = differences.get((row["network"], row["case"], "cluster"))
            if found is not None:
                row["difference_from_bioim2im"] = {"mean": found[0], "max": found[1]}
            print(
                f"{row['network']} {row['case']}: --cluster {args.cluster} takes "
                f"{row['cluster_overhead']:+.1%} of one process's time"
            )
        elif script is not None and row["variant"] != "monai":
            row["speed"] = round(script["seconds"] / row["seconds"], 3)
            row["cpu_ratio"] = round(script["cpu_seconds"] / row["cpu_seconds"], 3)
            row["memory"] = round(row["peak_mib"] / script["peak_mib"], 3)
            found = differences.get((row["network"], row["case"], row["variant"]))
            if found is not None:
                row["difference"] = {"mean": found[0], "max": found[1]}
        ratios = (
            f"{row['speed']:>5.2f}x {row['cpu_ratio']:>5.2f}x {row['memory']:>5.2f}x"
            if "speed" in row
            else ""
        )
        print(
            f"{row['network']:>24} {row['case']:>10} {'x'.join(map(str, row['shape'])):>16} "
            f"{row['variant']:>11} {row['seconds']:>8.1f} {row['cpu_seconds']:>7.1f} "
            f"{row['voxels_per_s'] / 1e6:>9.2f} {row['peak_mib']:>9.0f} {ratios}"
        )
    print("speed: the script's seconds / these; CPU: its CPU seconds / these; memory: peak / its")
    summary: dict[str, Any] = {
        "rows": rows,
        "device": args.device,
        "repeats": args.repeats,
        "quick": args.quick,
        "settings": args.set,
        "load_average": [round(min(loads), 2), round(max(loads), 2)] if loads else None,
    }
    for variant in ("bioim2im", "bf16", "onnxruntime"):
        speeds = [r["speed"] for r in rows if r["variant"] == variant and "speed" in r]
        if speeds:
            mean = math.exp(sum(math.log(s) for s in speeds) / len(speeds))
            summary[f"{variant}_ratio"] = round(mean, 3)
            print(
                f"{variant} vs script: geometric mean {mean:.3f}x, "
                f"lowest {min(speeds):.2f}x over {len(speeds)} rows"
            )
    growth = {}
    for network in {r["network"] for r in rows}:
        peaks = {
            r["case"]: r["peak_mib"]
            for r in rows
            if (r["network"], r["variant"]) == (network, "bioim2im")
        }
        if "wide-512" in peaks and "wide-1024" in peaks:
            growth[network] = round(peaks["wide-1024"] / peaks["wide-512"] - 1, 3)
            print(f"{network}: bioim2im memory growth wide-512 -> wide-1024 {growth[network]:+.1%}")
    if growth:
        summary["bioim2im_memory_growth_wide"] = growth
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
