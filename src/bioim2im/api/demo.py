"""`bioim2im demo`: the whole workflow on built-in synthetic data, on the CPU, in minutes."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from bioim2im.api.options import Opt, PythonOnly
from bioim2im.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

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


@dataclass
class DemoResult:
    """What the demo wrote, and the held-out images' scores."""

    output: Path
    report: Any
    minutes: float

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.report.aggregate)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        yield self.report
        yield Text(
            f"\ndone in {self.minutes:.1f} min. Wrote:\n"
            f"  data         {self.output / 'data'}\n"
            f"  run          {self.output / 'run'} (preset.toml, checkpoints/, metrics.jsonl, "
            "snapshots/, loss_curve.png)\n"
            f"  predictions  {self.output / 'predictions'}\n"
            f"  metrics      {self.output / 'metrics.json'}"
        )


def demo(
    output: Annotated[
        str | Path,
        Opt("Folder for the demo's data, run and predictions.", ("--output", "-o")),
    ] = Path("bioim2im-demo"),
    *,
    minutes: Annotated[float, Opt("Training time budget (at least 0.1).")] = 2.0,
    overwrite: Annotated[bool, Opt("Replace an earlier demo folder.")] = False,
    say: Annotated[Callable[[str], None] | None, PythonOnly()] = None,
) -> DemoResult:
    """Synthetic nuclei -> train a 2D segmentation model -> predict held-out images -> evaluate.

    ``say`` is told each step (rich markup; default: printed to stderr)."""
    from bioim2im.api.evaluation import evaluate
    from bioim2im.api.prediction import predict_files
    from bioim2im.api.training import train
    from bioim2im.builtins.presets import presets_dir
    from bioim2im.data.synthetic import write_dataset
    from bioim2im.io.atomic import refuse_inputs

    if minutes < 0.1:
        raise UserError(f"--minutes {minutes}: give at least 0.1")
    output = Path(output)
    preset = presets_dir() / "segmentation-2d.toml"
    refuse_inputs(output, [preset])  # the one file the demo reads; it makes its own data
    _prepare_folder(output, overwrite)
    say = say or _say
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
    return DemoResult(output, report, (time.monotonic() - started) / 60)


def _say(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(text, highlight=False)


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
