"""`bioim2im demo`: the whole workflow on built-in synthetic data, on the CPU, in minutes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bioim2im.errors import UserError

MARKER = ".bioim2im-demo"
# A small 2D UNet trained for a time budget: the constant learning rate suits a run whose
# length is set by the clock rather than by a step count.
DEMO_OVERRIDES = [
    "data.patch_size=[96, 96]",
    "data.batch_size=8",
    "data.num_workers=1",
    "data.val_fraction=0.15",
    "model.backbone.channels=[16, 32, 64, 128]",
    "train.steps=100000",
    "train.val_every=150",
    "train.checkpoint_every=150",
    "train.scheduler={name = 'constant', warmup_steps = 20}",
    "train.optimizer={name = 'adamw', lr = 3e-3, weight_decay = 1e-4}",
    "predict.roi_size=[128, 128]",
]


def run_demo(
    output: Path, *, minutes: float = 2.0, overwrite: bool = False, console: Any = None
) -> dict[str, Any]:
    """Synthetic nuclei -> train -> predict the held-out images -> evaluate. Returns the metrics."""
    from bioim2im.api import evaluate, predict_files, train
    from bioim2im.builtins.presets import presets_dir
    from bioim2im.data.synthetic import write_dataset
    from bioim2im.evaluation import render_report
    from bioim2im.io.atomic import refuse_inputs

    preset = presets_dir() / "segmentation-2d.toml"
    refuse_inputs(output, [preset])  # the one file the demo reads; it makes its own data
    _prepare_folder(output, overwrite)
    say = console.print if console is not None else print
    started = time.monotonic()

    say(f"[bold]1/4[/] writing synthetic 2D nuclei to {output / 'data'}")
    train_data = write_dataset(
        output / "data" / "train",
        kind="nuclei",
        n_images=24,
        shape=(192, 192),
        seed=0,
        label_kind="semantic",
    )
    test_data = write_dataset(
        output / "data" / "test",
        kind="nuclei",
        n_images=4,
        shape=(256, 256),
        seed=1000,
        label_kind="semantic",
    )

    say(f"[bold]2/4[/] training a 2D UNet for {minutes:g} minutes on {train_data}")
    run_dir = output / "run"
    train(
        preset,
        overrides=[f"data.path={train_data}", f"train.max_minutes={minutes}", *DEMO_OVERRIDES],
        run_dir=run_dir,
    )

    say(f"[bold]3/4[/] predicting the {4} held-out images")
    predictions = output / "predictions"
    predict_files(run_dir, str(test_data / "IM"), predictions, format="tiff", progress=False)

    say("[bold]4/4[/] evaluating against their ground truth")
    report = evaluate(
        predictions,
        test_data / "GT",
        task="semantic",
        head="seg",
        json_path=output / "metrics.json",
    )
    if console is not None:
        render_report(report, console)
    say(
        f"\ndone in {(time.monotonic() - started) / 60:.1f} min. Wrote:\n"
        f"  data         {output / 'data'}\n"
        f"  run          {run_dir} (preset.toml, checkpoints/, metrics.jsonl, snapshots/, loss_curve.png)\n"
        f"  predictions  {predictions}\n"
        f"  metrics      {output / 'metrics.json'}"
    )
    return report.aggregate


def _prepare_folder(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file; give a folder for the demo")
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise UserError(
                f"{output} already exists; pass --overwrite to replace it or --output elsewhere"
            )
        if not (output / MARKER).exists():
            raise UserError(f"{output} was not made by `bioim2im demo`; refusing to delete it")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("made by bioim2im demo\n")
