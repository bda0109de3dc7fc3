"""Training throughput: bioim2im's engine vs a plain hand-written torch + MONAI loop.

Both train the same network (MONAI UNet + a 1x1 conv head) with the same loss, optimizer,
patch size, batch size and TIFF files on disk, for a 2D and a 3D case, in one run. The
bioim2im figure is the engine's own samples/s from metrics.jsonl after the warm-up window;
the baseline is timed over the same number of steps after the same warm-up.

    python benchmarks/bench_train.py [--steps 60] [--warmup 10] [--workers 1] [--repeats 1]

With --repeats N each case runs both loops N times, alternating which goes first, and reports
the median of each, so that a change in the machine's load does not fall on one side only.
The last line printed is one JSON object; `ratio` = bioim2im / baseline (higher is better).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

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
}


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
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r["samples_per_s"] for r in records if "samples_per_s" in r and r["step"] > warmup]
    # Windows are equal in size (log_every steps), so the harmonic mean is total samples / total time.
    return len(timed) / sum(1.0 / v for v in timed)


def baseline_samples_per_s(data: Path, case: dict, steps: int, warmup: int, workers: int) -> float:
    import tifffile
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
    )
    loss_fn = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def batches():
        while True:
            yield from loader

    stream = batches()
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        batch = next(stream)
        image = batch["image"].as_tensor()
        label = (batch["label"].as_tensor() > 0).float()
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
    parser.add_argument("--cases", default="2d,3d")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    from bioim2im.data.synthetic import write_dataset

    figures: dict[str, float] = {}
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
            ours_runs: list[float] = []
            theirs_runs: list[float] = []
            for repeat in range(args.repeats):
                run_dir = Path(tmp) / f"run-{name}-{repeat}"
                ours_first = repeat % 2 == 0
                if not ours_first:
                    theirs_runs.append(
                        baseline_samples_per_s(data, case, args.steps, args.warmup, args.workers)
                    )
                ours_runs.append(
                    bioim2im_samples_per_s(
                        data, case, args.steps, args.warmup, args.workers, run_dir
                    )
                )
                if ours_first:
                    theirs_runs.append(
                        baseline_samples_per_s(data, case, args.steps, args.warmup, args.workers)
                    )
            ours = statistics.median(ours_runs)
            theirs = statistics.median(theirs_runs)
            figures[f"{name}_bioim2im_samples_per_s"] = round(ours, 2)
            figures[f"{name}_baseline_samples_per_s"] = round(theirs, 2)
            figures[f"{name}_ratio"] = round(ours / theirs, 3)
            print(
                f"{name}: bioim2im {ours:8.2f} samples/s   torch+MONAI {theirs:8.2f} samples/s   "
                f"ratio {ours / theirs:.3f}",
                file=sys.stderr,
            )
    ratios = [v for k, v in figures.items() if k.endswith("_ratio")]
    figures["ratio"] = round(math.prod(ratios) ** (1 / len(ratios)), 3)
    figures["repeats"] = args.repeats
    figures["device"] = "cpu"
    figures["torch_threads"] = torch.get_num_threads()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
