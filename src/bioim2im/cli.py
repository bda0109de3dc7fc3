"""The `bioim2im` command line: parse, call the Python API, render. Heavy imports stay inside
the commands so that `--help` and `--version` answer at once."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bioim2im import __version__
from bioim2im.errors import UserError, describe_os_error, os_error_cause
from bioim2im.plugin.hookspecs import KIND_NAMES

if TYPE_CHECKING:
    from rich.console import Console

    from bioim2im.api import TrainResult

app = typer.Typer(
    name="bioim2im",
    help="Train and run image-to-image deep-learning models for microscopy.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)

SetOption = Annotated[
    Optional[list[str]],  # noqa: UP045 (typer reads the annotation at run time)
    typer.Option(
        "--set",
        "-s",
        metavar="KEY.PATH=VALUE",
        help="Override a preset key; VALUE is read as TOML (numbers, true, [1, 2], {a = 1}) "
        "or else as a bare string. Repeatable; later ones win.",
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"bioim2im {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Train and run image-to-image deep-learning models for microscopy."""


@app.command("list-plugins")
def list_plugins(
    kind: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--kind",
            "-k",
            help=f"Only this kind: {', '.join(KIND_NAMES)}.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
) -> None:
    """List every registered component with the package that provides it."""
    import json

    from bioim2im.plugin.manager import get_registry
    from bioim2im.plugin.registry import suggest

    if kind is not None and kind not in KIND_NAMES:
        raise UserError(
            f"--kind {kind!r} is not a component kind{suggest(kind, KIND_NAMES)} (valid: {', '.join(KIND_NAMES)})"
        )
    rows = [
        {
            "kind": c.kind,
            "name": c.name,
            "package": c.package,
            "version": c.version,
            "description": c.description,
        }
        for c in get_registry()
        if kind is None or c.kind == kind
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(
        "kind", "name", "package", "version", "description", box=None, header_style="bold"
    )
    for row in rows:
        table.add_row(*(row[k] for k in ("kind", "name", "package", "version", "description")))
    _console().print(table)


@app.command()
def check(
    preset: Annotated[
        str,
        typer.Argument(help="A preset TOML file or a preset's name.", show_default=False),
    ],
    overrides: SetOption = None,
    data: Annotated[
        bool, typer.Option("--data", help="Also scan the dataset the preset names.")
    ] = False,
) -> None:
    """Validate a preset without training and print it fully resolved (exit 0 valid, 2 not)."""
    from bioim2im.config import load_preset, to_toml

    resolved = load_preset(preset, overrides or [])
    if data:
        from bioim2im.data.preflight import ensure_usable, preflight, render_report

        report = preflight(resolved)
        render_report(report, _console(stderr=True))
        ensure_usable(report)
    sys.stdout.write(to_toml(resolved))
    _console(stderr=True).print(f"[green]✓[/] {preset} is valid", highlight=False)


@app.command()
def train(
    preset: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(
            help="A preset TOML file or a preset's name (not with --resume).", show_default=False
        ),
    ] = None,
    overrides: SetOption = None,
    run_dir: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--run-dir", "-o", help="Where the run is written (default runs/<preset>-<time>)."
        ),
    ] = None,
    resume: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--resume", help="Continue the run in this directory from its last checkpoint."
        ),
    ] = None,
    devices: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--devices", min=1, help="Train with N processes (GPUs) on this machine via torchrun."
        ),
    ] = None,
) -> None:
    """Train a model from a preset; writes checkpoints, metrics and snapshots to a run directory."""
    from bioim2im import api

    result = api.train(
        preset, overrides=overrides or [], run_dir=run_dir, resume=resume, devices=devices
    )
    _print_result(result)


@app.command()
def predict(
    model: Annotated[
        Path, typer.Argument(help="A run directory or a checkpoint file.", show_default=False)
    ],
    inputs: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="An image, a glob, a folder or a CSV manifest.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the predictions.", show_default=False)
    ],
    overrides: SetOption = None,
    output_format: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--format", help="ome-zarr (default) or tiff."),
    ] = None,
    devices: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--devices", min=1, help="Predict with N processes (GPUs) via torchrun."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs.")
    ] = False,
) -> None:
    """Predict images of any size block by block; resumes where a killed run stopped."""
    from bioim2im import api
    from bioim2im.prediction.display import render_summary

    summary = api.predict_files(
        model,
        inputs,
        output,
        overrides=overrides or [],
        format=output_format,
        overwrite=overwrite,
        devices=devices,
    )
    render_summary(summary, _console(stderr=True))


@app.command()
def evaluate(
    pred: Annotated[
        Path,
        typer.Option(
            "--pred", "-p", help="Prediction file, folder or zarr group.", show_default=False
        ),
    ],
    truth: Annotated[
        Path, typer.Option("--truth", "-t", help="Ground-truth file or folder.", show_default=False)
    ],
    task: Annotated[
        str,
        typer.Option(
            "--task", help="semantic, instance, regression, cellmap, or auto (from the data)."
        ),
    ] = "auto",
    head: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--head", help="Which head's predictions to score when there are several."),
    ] = None,
    json_path: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--json", help="Write per-image and aggregate metrics as JSON."),
    ] = None,
    csv_path: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--csv", help="Write one row per image plus an aggregate row as CSV."),
    ] = None,
) -> None:
    """Score predictions against ground truth; a table per image and overall."""
    from bioim2im import api
    from bioim2im.evaluation import render_report

    report = api.evaluate(pred, truth, task=task, head=head, json_path=json_path, csv_path=csv_path)
    render_report(report, _console())


@app.command()
def demo(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Folder for the demo's data, run and predictions."),
    ] = Path("bioim2im-demo"),
    minutes: Annotated[
        float, typer.Option("--minutes", min=0.1, help="Training time budget.")
    ] = 2.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier demo folder.")
    ] = False,
) -> None:
    """Synthetic nuclei -> train a 2D segmentation model -> predict held-out images -> evaluate."""
    from bioim2im.demo import run_demo

    run_demo(output, minutes=minutes, overwrite=overwrite, console=_console(stderr=True))


def _print_result(result: TrainResult) -> None:
    from rich.table import Table

    rows: dict[str, object] = {
        "run_dir": result.run_dir,
        "step": f"{result.step}/{result.total_steps}",
        "stopped": result.stop_reason,
        **result.metrics,
    }
    table = Table(title="trained", box=None, show_header=False)
    for key, value in rows.items():
        if value is not None:
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    _console(stderr=True).print(table)


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True)


def main() -> None:
    """Entry point: user errors become one message and exit status 2, never a traceback; what
    the machine refuses (disk full, permissions) one message and exit status 1."""
    try:
        app(standalone_mode=True)
    except UserError as exc:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        _fail(str(exc), exc.exit_code)
    except (OSError, RuntimeError) as exc:
        cause = os_error_cause(exc)
        if cause is None or os.environ.get("BIOIM2IM_DEBUG"):
            raise
        _fail(describe_os_error(cause), 1)
    except KeyboardInterrupt:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        _fail("interrupted", 130)


def _fail(message: str, exit_code: int) -> None:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
