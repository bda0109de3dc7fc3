"""The `bioim2im` command line: parse, call the Python API, render. Heavy imports stay inside
the commands so that `--help` and `--version` answer at once."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bioim2im import __version__
from bioim2im.errors import UserError

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
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Train and run image-to-image deep-learning models for microscopy."""


@app.command("list-plugins")
def list_plugins(
    kind: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--kind", "-k", help="Only this kind: backbone, head, loss, transform, "
                     "postprocessor, reader, writer, metric, optimizer, scheduler or preset."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """List every registered component with the package that provides it."""
    import json

    from bioim2im.plugins import get_registry
    from bioim2im.registry import KINDS, suggest

    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind {kind!r} is not a component kind{suggest(kind, KINDS)} (valid: {', '.join(KINDS)})")
    rows = [
        {"kind": c.kind, "name": c.name, "package": c.package, "version": c.version, "description": c.description}
        for c in get_registry()
        if kind is None or c.kind == kind
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("kind", "name", "package", "version", "description", box=None, header_style="bold")
    for row in rows:
        table.add_row(*(row[k] for k in ("kind", "name", "package", "version", "description")))
    _console().print(table)


@app.command()
def check(
    preset: Annotated[Path, typer.Argument(help="The preset TOML file.", show_default=False)],
    overrides: SetOption = None,
    data: Annotated[bool, typer.Option("--data", help="Also scan the dataset the preset names.")] = False,
) -> None:
    """Validate a preset without training and print it fully resolved (exit 0 valid, 2 not)."""
    from bioim2im.config import load_preset, to_toml

    resolved = load_preset(preset, overrides or [])
    if data:
        from bioim2im.data.preflight import preflight, render_report

        report = preflight(resolved)
        render_report(report, _console(stderr=True))
    sys.stdout.write(to_toml(resolved))
    _console(stderr=True).print(f"[green]✓[/] {preset} is valid", highlight=False)


@app.command()
def train(
    preset: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Argument(help="The preset TOML file (not needed with --resume).", show_default=False),
    ] = None,
    overrides: SetOption = None,
    run_dir: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--run-dir", "-o", help="Where the run is written (default runs/<preset>-<time>)."),
    ] = None,
    resume: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--resume", help="Continue the run in this directory from its last checkpoint."),
    ] = None,
    devices: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--devices", min=1, help="Train with N processes (GPUs) on this machine via torchrun."),
    ] = None,
) -> None:
    """Train a model from a preset; writes checkpoints, metrics and snapshots to a run directory."""
    from bioim2im.api import train as train_model

    result = train_model(preset, overrides or [], run_dir=run_dir, resume=resume, devices=devices)
    _print_result("trained", result)


def _print_result(title: str, result: dict[str, object]) -> None:
    from rich.table import Table

    table = Table(title=title, box=None, show_header=False)
    for key, value in result.items():
        if value is not None:
            table.add_row(str(key), f"{value:.4f}" if isinstance(value, float) else str(value))
    _console(stderr=True).print(table)


def _console(stderr: bool = False):  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=stderr)


def main() -> None:
    """Entry point: user errors become one message and exit status 2, never a traceback."""
    try:
        app(standalone_mode=True)
    except UserError as exc:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        from rich.markup import escape

        _console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
