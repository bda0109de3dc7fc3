"""What ``predict.amp = "bf16"`` costs in quality and gains in speed, on the CPU.

Two parts (``--part``, default both):

- ``quality``: the runs ``bench_plan.py`` trained (its ``--workdir``, one per case and
  variant) predicted in full precision and in bf16 autocast, each scored on the case's test
  and held-out images as ``bench_plan.py`` scores them (AP@0.5 and PQ for nuclei, Dice for
  masks, PSNR and SSIM against the clean image for Noise2Void). Train them first, e.g.
  ``python benchmarks/bench_plan.py --variants planned --workdir DIR``.
- ``speed``: every shipped preset's network (``bench_predict.py``'s list, random weights),
  one batch of its prediction windows (4 windows, as the presets predict) run in float32 and
  in bf16 autocast, the median of ``--repeats`` batches each, and the largest difference
  between the two outputs. The network alone: ``bench_predict.py --variants bioim2im,bf16``
  measures whole predictions.

bf16 is fast only where the CPU has it natively (AVX512-BF16 or AMX, ``torch.ops.mkldnn.
_is_mkldnn_bf16_supported()``); elsewhere autocast emulates it and is slower than float32.

    python benchmarks/bench_precision.py --workdir DIR [--seed 0] [--held-out 4]
    python benchmarks/bench_precision.py --part speed [--networks segmentation-2d,...]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_plan
import bench_predict

SCORES = ("all ap@0.50", "all pq@0.50", "all dice", "psnr", "ssim")


def quality(work: Path, seed: int, held_out: int, variant: str) -> list[dict[str, Any]]:
    rows = []
    for name, case in bench_plan.CASES.items():
        runs = sorted(work.glob(f"{variant}-{name}-seed{seed}-*min"))
        if not runs:
            print(f"{name}: no {variant} run in {work}", file=sys.stderr)
            continue
        data = bench_plan.case_data(work, case, seed, held_out)
        row: dict[str, Any] = {"case": name, "run": runs[-1].name}
        for amp in ("off", "bf16"):
            started = time.monotonic()
            found = bench_plan.score(case, runs[-1], data, overrides=[f"predict.amp={amp}"])
            row[amp] = {k: round(v, 4) for k, v in found.items() if k in SCORES}
            row[f"{amp} seconds"] = round(time.monotonic() - started, 1)
        row["bf16 - off"] = {k: round(row["bf16"][k] - row["off"][k], 4) for k in row["off"]}
        print(
            f"{name:>18}: "
            + ", ".join(
                f"{k} {row['off'][k]:.4f} -> {row['bf16'][k]:.4f} ({row['bf16 - off'][k]:+.4f})"
                for k in row["off"]
            ),
            flush=True,
        )
        rows.append(row)
    return rows


def speed(networks: list[str], repeats: int, root: Path) -> list[dict[str, Any]]:
    import torch

    from bioim2im.errors import UserError
    from bioim2im.formats import load_model

    rows = []
    for name in networks:
        try:
            run = bench_predict.make_model(root, name)
        except UserError as error:  # a plugin's preset, the plugin not installed
            print(f"{name} left out: {error}", file=sys.stderr)
            continue
        model = load_model(run, device="cpu")
        window = bench_predict.WINDOW[len(model.roi_size)]
        batch = torch.randn(
            4, model.in_channels, *window, generator=torch.Generator().manual_seed(0)
        )
        seconds, outputs = {}, {}
        for amp in ("off", "bf16"):
            times = []
            with (
                torch.inference_mode(),
                torch.autocast("cpu", torch.bfloat16, enabled=amp == "bf16"),
            ):
                for _ in range(repeats + 1):  # the first batch warms up
                    started = time.perf_counter()
                    found = model.network(batch)
                    times.append(time.perf_counter() - started)
            seconds[amp] = statistics.median(times[1:])
            outputs[amp] = {k: v.float() for k, v in found.items()}
        difference = max(
            float((outputs["off"][k] - outputs["bf16"][k]).abs().max()) for k in outputs["off"]
        )
        scale = max(float(v.abs().max()) for v in outputs["off"].values())
        row = {
            "network": name,
            "window": list(window),
            "float32 s": round(seconds["off"], 4),
            "bf16 s": round(seconds["bf16"], 4),
            "speed": round(seconds["off"] / seconds["bf16"], 2),
            "max difference": round(difference, 4),
            "largest output": round(scale, 3),
        }
        print(
            f"{name:>24}: float32 {row['float32 s']:.3f} s, bf16 {row['bf16 s']:.3f} s, "
            f"{row['speed']:.2f}x; outputs differ by up to {difference:.3g} (largest {scale:.3g})",
            flush=True,
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("quality", "speed", "both"), default="both")
    parser.add_argument("--workdir", type=Path, help="bench_plan.py's work folder (quality)")
    parser.add_argument("--seed", type=int, default=0, help="bench_plan.py's --seed")
    parser.add_argument("--held-out", type=int, default=4, help="bench_plan.py's --held-out")
    parser.add_argument("--variant", default="planned", help="which of bench_plan's runs")
    parser.add_argument("--networks", default=",".join(bench_predict.NETWORKS))
    parser.add_argument("--repeats", type=int, default=5, help="batches timed per precision")
    args = parser.parse_args()
    import torch

    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(f"native bf16 on this CPU: {native}; torch threads {torch.get_num_threads()}")
    summary: dict[str, Any] = {"native_bf16": native}
    if args.part in ("quality", "both"):
        if args.workdir is None:
            parser.error("--part quality needs --workdir: a folder bench_plan.py trained in")
        summary["quality"] = quality(args.workdir, args.seed, args.held_out, args.variant)
    if args.part in ("speed", "both"):
        with tempfile.TemporaryDirectory(prefix="bench_precision_") as root:
            summary["speed"] = speed(args.networks.split(","), args.repeats, Path(root))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
