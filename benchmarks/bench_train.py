"""Training throughput: bioim2im's engine vs a plain hand-written torch + MONAI loop.

Both train the same network (MONAI UNet + a 1x1 conv head) with the same loss, optimizer,
patch size, batch size and TIFF files on disk, for a 2D and a 3D case, in one run. The
bioim2im figure is the engine's own samples/s from metrics.jsonl after the warm-up window;
the baseline is timed over the same number of steps after the same warm-up.

The ``3d-hand`` case is the shortest loop a user would write: MONAI UNet 16-32-64-128 with two
residual units and two output channels, DiceCE with softmax, Adam 1e-3, random 32 x 128 x 128
crops of one volume held in memory, batches of 2, no data workers (``--workers`` does not apply)
and no augmentation; bioim2im trains the same network (backbone with 2 features + 1x1 conv head),
loss, optimizer, crops and batches on the same volume.

    python benchmarks/bench_train.py [--steps 60] [--warmup 10] [--workers 1] [--repeats 1]
    python benchmarks/bench_train.py --cases 3d-hand --repeats 3 [--device cuda]

With --repeats N each case runs both loops N times, alternating which goes first, and reports
the median of each, so that a change in the machine's load does not fall on one side only.
The last line printed is one JSON object; `ratio` = bioim2im / baseline (higher is better).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES = {
    "2d": {
        "shape": (256, 256),
        "n_images": 16,
        "patch": [128, 128],
        "batch": 8,
        "channels": [16, 32, 64, 128],
    },
    "3d": {
        "shape": (48, 128, 128),
        "n_images": 8,
        "patch": [32, 64, 64],
        "batch": 2,
        "channels": [16, 32, 64, 128],
    },
    "3d-hand": {
        "shape": (64, 256, 256),
        "n_images": 1,
        "patch": [32, 128, 128],
        "batch": 2,
        "channels": [16, 32, 64, 128],
        "hand": True,
    },
}


def bioim2im_hand_case(data: Path, case: dict, steps: int, warmup: int, run_dir: Path) -> float:
    """bioim2im on the hand loop's terms: same network, loss, optimizer, crops, no workers."""
    from bioim2im.api import train

    preset = run_dir.parent / f"{run_dir.name}.toml"
    preset.write_text('extends = "segmentation-3d"\n')
    train(
        preset,
        overrides=[
            f"data.path={data}",
            f"data.patch_size={case['patch']}",
            f"data.batch_size={case['batch']}",
            "data.num_workers=0",
            "data.augment=[]",
            "data.normalize={name = 'zscore'}",
            "data.foreground_fraction=0.0",
            "data.val_fraction=0.0",
            f"model.backbone.channels={case['channels']}",
            "model.backbone.strides=[2, 2, 2]",
            "model.backbone.num_res_units=2",
            "model.features=2",
            "model.heads.seg.out_channels=2",
            "model.heads.seg.loss={name = 'dice_ce', sigmoid = false, softmax = true, to_onehot_y = true}",
            "model.heads.seg.postprocess=[{name = 'softmax'}, {name = 'argmax'}]",
            "model.heads.seg.metrics=[]",
            f"train.steps={warmup + steps}",
            f"train.log_every={warmup}",
            "train.val_every=1000000",
            "train.checkpoint_every=1000000",
            "train.optimizer={name = 'adam', lr = 1e-3}",
            "train.scheduler={name = 'constant'}",
            "logging.progress='lines'",
            "logging.snapshots=false",
        ],
        run_dir=run_dir,
    )
    return _logged_rate(run_dir, warmup)


def hand_loop_samples_per_s(data: Path, case: dict, steps: int, warmup: int, device: str) -> float:
    """The hand-written loop: random crops of one in-memory volume, no DataLoader."""
    import numpy as np
    import tifffile
    import torch
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    (image_path,) = sorted((data / "IM").glob("*.tif"))
    image = tifffile.imread(image_path).astype(np.float32)
    image = (image - image.mean()) / image.std()
    label = tifffile.imread(data / "GT" / image_path.name).astype(np.int64)
    model = UNet(3, 1, 2, channels=case["channels"], strides=[2, 2, 2], num_res_units=2).to(device)
    loss_fn = DiceCELoss(softmax=True, to_onehot_y=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    patch = case["patch"]

    def batch() -> tuple[Any, Any]:
        images, labels = [], []
        for _ in range(case["batch"]):
            start = [rng.integers(0, n - p + 1) for n, p in zip(image.shape, patch, strict=True)]
            region = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
            images.append(image[region][None])
            labels.append(label[region][None])
        return (
            torch.from_numpy(np.stack(images)).to(device),
            torch.from_numpy(np.stack(labels)).to(device),
        )

    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _synchronize(device)
            start = time.perf_counter()
        x, y = batch()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.detach().item()  # synchronise, as a logging loop would
    return steps * case["batch"] / (time.perf_counter() - start)


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _logged_rate(run_dir: Path, warmup: int) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r["samples_per_s"] for r in records if "samples_per_s" in r and r["step"] > warmup]
    # Windows are equal in size (log_every steps), so the harmonic mean is total samples / total time.
    return len(timed) / sum(1.0 / v for v in timed)


def bioim2im_samples_per_s(
    data: Path, case: dict, steps: int, warmup: int, workers: int, run_dir: Path
) -> float:
    from bioim2im.api import train

    preset = run_dir.parent / f"{run_dir.name}.toml"
    preset.write_text(f'extends = "segmentation-{len(case["patch"])}d"\n')
    log_every = warmup
    train(
        preset,
        overrides=[
            f"data.path={data}",
            f"data.patch_size={case['patch']}",
            f"data.batch_size={case['batch']}",
            f"data.num_workers={workers}",
            "data.augment=[{name = 'flip'}]",
            "data.normalize={name = 'zscore'}",
            "data.foreground_fraction=0.0",
            "data.val_fraction=0.0",
            f"model.backbone.channels={case['channels']}",
            "model.backbone.strides=[2, 2, 2]",
            "model.backbone.num_res_units=0",
            "model.features=16",
            f"train.steps={warmup + steps}",
            f"train.log_every={log_every}",
            "train.val_every=1000000",
            "train.checkpoint_every=1000000",
            "train.optimizer={name = 'adamw', lr = 1e-3}",
            "train.scheduler={name = 'constant'}",
            "logging.progress='lines'",
        ],
        run_dir=run_dir,
    )
    return _logged_rate(run_dir, warmup)


def baseline_samples_per_s(
    data: Path, case: dict, steps: int, warmup: int, workers: int, device: str = "cpu"
) -> float:
    import tifffile
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import (
        Compose,
        NormalizeIntensityd,
        RandFlipd,
        RandSpatialCropd,
    )
    from torch import nn

    dims = len(case["patch"])
    # MONAI's LoadImage has no reader for 3D TIFF stacks; a user reads them with tifffile.
    files = [
        {
            "image": torch.from_numpy(tifffile.imread(p).astype("float32")[None]),
            "label": torch.from_numpy(
                tifffile.imread(data / "GT" / p.name).astype("float32")[None]
            ),
        }
        for p in sorted((data / "IM").glob("*.tif"))
    ]
    transform = Compose(
        [
            NormalizeIntensityd(keys="image"),
            RandSpatialCropd(keys=["image", "label"], roi_size=case["patch"], random_size=False),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
        ]
    )
    dataset = CacheDataset(files, transform, progress=False, num_workers=0)
    loader = DataLoader(
        dataset,
        batch_size=case["batch"],
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    model = nn.Sequential(
        UNet(
            dims,
            1,
            16,
            channels=case["channels"],
            strides=[2, 2, 2],
            num_res_units=0,
            norm="instance",
        ),
        conv(16, 1, 1),
    ).to(device)
    loss_fn = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def batches():
        while True:
            yield from loader

    stream = batches()
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _synchronize(device)
            start = time.perf_counter()
        batch = next(stream)
        image = batch["image"].as_tensor().to(device)
        label = (batch["label"].as_tensor() > 0).float().to(device)
        loss = loss_fn(model(image), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.detach().item()  # synchronise, as a logging loop would
    return steps * case["batch"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cases", default="2d,3d,3d-hand", help=f"of {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (bioim2im trains on a GPU it sees)"
    )
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch starts: bioim2im would take a GPU
    import torch

    from bioim2im.data.synthetic import write_dataset

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            case = CASES[name]
            data = write_dataset(
                Path(tmp) / f"data-{name}",
                kind="nuclei",
                n_images=case["n_images"],
                shape=case["shape"],
                seed=0,
                label_kind="semantic",
            )

            def ours(repeat: int, case: dict = case, data: Path = data, name: str = name) -> float:
                run_dir = Path(tmp) / f"run-{name}-{repeat}"
                if case.get("hand"):
                    return bioim2im_hand_case(data, case, args.steps, args.warmup, run_dir)
                return bioim2im_samples_per_s(
                    data, case, args.steps, args.warmup, args.workers, run_dir
                )

            def theirs(case: dict = case, data: Path = data) -> float:
                if case.get("hand"):
                    return hand_loop_samples_per_s(data, case, args.steps, args.warmup, args.device)
                return baseline_samples_per_s(
                    data, case, args.steps, args.warmup, args.workers, args.device
                )

            ours_runs: list[float] = []
            theirs_runs: list[float] = []
            for repeat in range(args.repeats):
                # Alternate which goes first, so that a change of load falls on both alike.
                if repeat % 2 == 0:
                    ours_runs.append(ours(repeat))
                    theirs_runs.append(theirs())
                else:
                    theirs_runs.append(theirs())
                    ours_runs.append(ours(repeat))
            mine, baseline = statistics.median(ours_runs), statistics.median(theirs_runs)
            figures[f"{name}_bioim2im_samples_per_s"] = round(mine, 2)
            figures[f"{name}_baseline_samples_per_s"] = round(baseline, 2)
            figures[f"{name}_ratio"] = round(mine / baseline, 3)
            figures[f"{name}_runs"] = {
                "bioim2im": [round(v, 2) for v in ours_runs],
                "baseline": [round(v, 2) for v in theirs_runs],
            }
            print(
                f"{name}: bioim2im {mine:8.2f} samples/s   baseline {baseline:8.2f} samples/s   "
                f"ratio {mine / baseline:.3f}   (runs: {figures[f'{name}_runs']})",
                file=sys.stderr,
            )
    ratios = [v for k, v in figures.items() if k.endswith("_ratio")]
    figures["ratio"] = round(math.prod(ratios) ** (1 / len(ratios)), 3)
    figures["repeats"] = args.repeats
    figures["device"] = args.device
    figures["torch_threads"] = torch.get_num_threads()
    figures["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
