"""Training throughput: bioim2im's engine vs a hand-written torch + MONAI loop, per preset network.

For each distinct network the shipped presets build (``--networks``; ``--list`` prints them),
both loops train **the same** ``nn.Module`` -- built by bioim2im from the preset exactly as the
preset builds it, same initial weights -- with the preset's patch size, batch size and
optimizer, on random crops of one synthetic volume (or image) held in memory, no data workers
and no augmentation:

- **bioim2im**: the ``bioim2im train`` command on the preset, in a process of its own (as its
  users run it; the hand loop runs in this one), with ``data.num_workers = 0``, no
  augmentation, z-score normalisation and no validation; its samples/s are read from its own
  ``metrics.jsonl`` after the warm-up steps;
- **hand loop**: the shortest loop a user would write: random crops, the network, the loss a
  user would take (MONAI's ``DiceCELoss`` for a Dice + CE head, torch's ``L1Loss`` /
  ``MSELoss`` / ``BCEWithLogitsLoss``; the preset's own loss module where MONAI has none, e.g.
  EmbedSeg's), ``zero_grad``, ``backward``, ``step`` and a ``loss.item()`` per step.

With ``--repeats N`` each network runs both loops N times, alternating which goes first, and
reports the medians. ``ratio`` = bioim2im's samples/s over the hand loop's (higher is better).
The last line printed is one JSON object.

    python benchmarks/bench_train.py                           # every network, 40 steps after 8
    python benchmarks/bench_train.py --networks segmentation-3d-softmax --repeats 3
    python benchmarks/bench_train.py --quick                   # 6 steps after 2, a smoke run
    python benchmarks/bench_train.py --set train.compile=true  # a lever, on bioim2im's side

Networks left out, and why: ``multitask-3d`` (three heads with their own targets, one a 2D
projection: the hand loop would be a second engine), ``superres-3d`` (targets on a finer grid),
``pix2pix-2d`` / ``cyclegan-2d`` (adversarial training: a discriminator and a second optimizer
per step) and ``cellmap-*`` (their data layout): their networks are in bench_predict.py.
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

# name: preset, --set for the network (none: the preset's), synthetic data, volume shape, the
# hand loop's loss, and (optionally) patch and batch other than the preset's.
NETWORKS: dict[str, dict[str, Any]] = {
    "segmentation-3d": {
        "preset": "segmentation-3d",
        "data": ("nuclei", "semantic"),
        "shape": (64, 256, 256),
        "loss": "dice_ce_sigmoid",
    },
    "segmentation-3d-softmax": {
        # Issue 24's case: 2 residual units, 2 classes, windows of 32 x 128 x 128, Adam.
        "preset": "segmentation-3d",
        "set": [
            "model.backbone.num_res_units=2",
            "model.heads.seg.out_channels=2",
            "model.heads.seg.loss={name = 'dice_ce', sigmoid = false, softmax = true, "
            "to_onehot_y = true}",
            "model.heads.seg.postprocess=[{name = 'softmax'}, {name = 'argmax'}]",
            "train.optimizer={name = 'adam', lr = 1e-3}",
        ],
        "data": ("nuclei", "semantic"),
        "shape": (64, 256, 256),
        "patch": [32, 128, 128],
        "batch": 2,
        "loss": "dice_ce_softmax",
    },
    "embedseg-3d": {
        "preset": "embedseg-3d",
        "data": ("nuclei", "instance"),
        "shape": (64, 256, 256),
        "loss": "preset",
    },
    "labelfree-3d": {
        "preset": "labelfree-3d",
        "data": ("labelfree", "instance"),
        "shape": (64, 256, 256),
        "loss": "mse",
    },
    "segmentation-2d": {
        "preset": "segmentation-2d",
        "data": ("nuclei", "semantic"),
        "shape": (1024, 1024),
        "loss": "dice_ce_sigmoid",
    },
    "embedseg-2d": {
        "preset": "embedseg-2d",
        "data": ("nuclei", "instance"),
        "shape": (1024, 1024),
        "loss": "preset",
    },
    "restoration-2d": {
        "preset": "restoration-2d",
        "data": ("restoration", "instance"),
        "shape": (1024, 1024),
        "loss": "l1",
    },
}


def build(name: str) -> tuple[Any, Any, Any]:
    """(preset, registry, network) of ``name``, the network seeded as both loops start it."""
    import torch

    from bioim2im.config.loading import load_preset
    from bioim2im.model.network import build_model
    from bioim2im.plugin.manager import get_registry

    spec = NETWORKS[name]
    registry = get_registry()
    settings = list(spec.get("set", []))
    if "patch" in spec:
        settings += [f"data.patch_size={spec['patch']}", f"data.batch_size={spec['batch']}"]
    preset = load_preset(spec["preset"], settings, registry)
    torch.manual_seed(0)
    return preset, registry, build_model(preset, registry)


def bioim2im_samples_per_s(
    name: str, data: Path, steps: int, warmup: int, run_dir: Path, settings: list[str]
) -> float:
    """The engine on the hand loop's terms: same network, loss, optimizer, crops, no workers;
    run as its users run it, the ``bioim2im train`` command (which backs tensors with huge
    pages where it can: bioim2im.memory_pages), in a process of its own."""
    spec = NETWORKS[name]
    preset = run_dir.parent / f"{run_dir.name}.toml"
    preset.write_text(f'extends = "{spec["preset"]}"\n')
    patch = (
        [f"data.patch_size={spec['patch']}", f"data.batch_size={spec['batch']}"]
        if "patch" in spec
        else []
    )
    overrides = [
        *spec.get("set", []),
        *patch,
        f"data.path={data}",
        "data.num_workers=0",
        "data.augment=[]",
        "data.normalize={name = 'zscore'}",
        "data.foreground_fraction=0.0",
        "data.val_fraction=0.0",
        f"train.steps={warmup + steps}",
        f"train.log_every={warmup}",
        "train.val_every=1000000",
        "train.checkpoint_every=1000000",
        "train.scheduler={name = 'constant'}",
        "logging.progress='lines'",
        "logging.snapshots=false",
        *settings,
    ]
    command = [sys.executable, "-m", "bioim2im", "train", str(preset), "--run-dir", str(run_dir)]
    subprocess.run(
        [*command, *(part for setting in overrides for part in ("--set", setting))],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r["samples_per_s"] for r in records if "samples_per_s" in r and r["step"] > warmup]
    # Windows are equal in size (log_every steps): the harmonic mean is samples / total time.
    return len(timed) / sum(1.0 / v for v in timed)


def hand_loop_samples_per_s(name: str, data: Path, steps: int, warmup: int, device: str) -> float:
    """The hand-written loop: random crops of one in-memory volume, no DataLoader."""
    import numpy as np
    import tifffile
    import torch
    from monai.losses import DiceCELoss

    from bioim2im.model.network import build_losses

    spec = NETWORKS[name]
    preset, registry, network = build(name)
    network = network.to(device).train()
    (head,) = preset.model.heads
    (image_path,) = sorted((data / "IM").glob("*.tif"))
    image = tifffile.imread(image_path).astype(np.float32)
    image = (image - image.mean()) / image.std()
    target = tifffile.imread(data / "GT" / image_path.name)
    kind = spec["loss"]
    if kind in ("l1", "mse"):
        target = target.astype(np.float32)
        target = (target - target.mean()) / target.std()
    elif kind == "dice_ce_softmax" or kind == "preset":
        target = target.astype(np.int64 if kind == "dice_ce_softmax" else np.float32)
    else:
        target = (target > 0).astype(np.float32)
    loss_fn = {
        "dice_ce_sigmoid": lambda: DiceCELoss(sigmoid=True),
        "dice_ce_softmax": lambda: DiceCELoss(softmax=True, to_onehot_y=True),
        "l1": torch.nn.L1Loss,
        "mse": torch.nn.MSELoss,
        "preset": lambda: build_losses(preset, registry)[head],
    }[kind]()
    train = preset.train.optimizer
    params = train.params() if hasattr(train, "params") else {}
    optimizer_class = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
    }[train.name]
    optimizer = optimizer_class(network.parameters(), **params)
    rng = np.random.default_rng(0)
    patch, batch_size = list(preset.data.patch_size), preset.data.batch_size

    def batch() -> tuple[Any, Any]:
        images, targets = [], []
        for _ in range(batch_size):
            start = [rng.integers(0, n - p + 1) for n, p in zip(image.shape, patch, strict=True)]
            region = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
            images.append(image[region][None])
            targets.append(target[region][None])
        return (
            torch.from_numpy(np.stack(images)).to(device),
            torch.from_numpy(np.stack(targets)).to(device),
        )

    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _synchronize(device)
            start = time.perf_counter()
        x, y = batch()
        loss = loss_fn(network(x)[head], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.detach().item()  # synchronise, as a logging loop would
    return steps * batch_size / (time.perf_counter() - start)


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help="of --list")
    parser.add_argument("--list", action="store_true", help="print the networks and stop")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="6 steps after 2: a smoke run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="bioim2im setting KEY=VALUE")
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (bioim2im trains on a GPU it sees)"
    )
    args = parser.parse_args()
    if args.list:
        for name, spec in NETWORKS.items():
            print(f"{name:>24}  preset {spec['preset']} {' '.join(spec.get('set', []))}")
        return
    networks = args.networks.split(",")
    unknown = [n for n in networks if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown networks {unknown}; choose among {', '.join(NETWORKS)}")
    if args.quick:
        args.steps, args.warmup = 6, 2
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch starts: bioim2im would take a GPU
    import torch

    from bioim2im.data.synthetic import write_dataset

    figures: dict[str, Any] = {"networks": {}}
    print(f"{'network':>24} {'bioim2im/s':>10} {'hand/s':>8} {'ratio':>6}  runs", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for name in networks:
            spec = NETWORKS[name]
            kind, label_kind = spec["data"]
            data = write_dataset(
                Path(tmp) / f"data-{name}",
                kind=kind,
                n_images=1,
                shape=spec["shape"],
                seed=0,
                **({"label_kind": label_kind} if kind == "nuclei" else {}),
            )
            ours_runs: list[float] = []
            theirs_runs: list[float] = []
            for repeat in range(args.repeats):
                run_dir = Path(tmp) / f"run-{name}-{repeat}"

                # Alternate which goes first, so that a change of load falls on both alike.
                for loop in ("ours", "theirs") if repeat % 2 == 0 else ("theirs", "ours"):
                    if loop == "ours":
                        ours_runs.append(
                            bioim2im_samples_per_s(
                                name, data, args.steps, args.warmup, run_dir, args.set
                            )
                        )
                    else:
                        theirs_runs.append(
                            hand_loop_samples_per_s(
                                name, data, args.steps, args.warmup, args.device
                            )
                        )
            mine, baseline = statistics.median(ours_runs), statistics.median(theirs_runs)
            figures["networks"][name] = {
                "bioim2im_samples_per_s": round(mine, 3),
                "hand_samples_per_s": round(baseline, 3),
                "ratio": round(mine / baseline, 3),
                "runs": {
                    "bioim2im": [round(v, 3) for v in ours_runs],
                    "hand": [round(v, 3) for v in theirs_runs],
                },
            }
            print(
                f"{name:>24} {mine:>10.2f} {baseline:>8.2f} {mine / baseline:>6.3f}  "
                f"{figures['networks'][name]['runs']}",
                file=sys.stderr,
            )
    ratios = [v["ratio"] for v in figures["networks"].values()]
    figures["ratio"] = round(math.prod(ratios) ** (1 / len(ratios)), 3)
    figures["repeats"] = args.repeats
    figures["steps"], figures["warmup"] = args.steps, args.warmup
    figures["settings"] = args.set
    figures["device"] = args.device
    figures["torch_threads"] = torch.get_num_threads()
    figures["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
