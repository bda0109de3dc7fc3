"""The `bioim2im` command line: each command is derived from its API function
(:mod:`bioim2im.cli.derive`), so it only parses, calls :mod:`bioim2im.api` and prints what
that returns. Plugins add command groups (kind ``command``). Heavy libraries stay out of the
way of `--help` and `--version`: the API imports them inside its functions."""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated, Any

import typer

from bioim2im import __version__, api
from bioim2im.cli.derive import command, console
from bioim2im.errors import PluginError, UserError, describe_os_error, os_error_cause

app = typer.Typer(
    name="bioim2im",
    help="Train and run image-to-image deep-learning models for microscopy.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


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


# Listings go to standard output; what a command did, to standard error.
app.command("list-plugins")(command(api.list_plugins, stdout=True, json_option=True))
app.command("options")(command(api.options, stdout=True, json_option=True))
app.command("schema")(command(api.schema))
app.command("check")(command(api.check))
app.command("plan")(command(api.plan, json_option=True))
app.command("train")(command(api.train))
app.command("predict")(command(api.predict_files))
app.command("export")(command(api.export))
app.command("evaluate")(command(api.evaluate, stdout=True))
app.command("postprocess")(command(api.postprocess))
app.command("demo")(command(api.demo))

presets_app = typer.Typer(
    help="The presets you can name: shipped ones and those of installed plugins.",
    invoke_without_command=True,
    no_args_is_help=False,
)
_list_presets = command(api.presets, stdout=True, json_option=True)


@presets_app.callback()
def _presets(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
) -> None:
    """List every preset by name with its description and the package that provides it;
    `bioim2im presets show NAME` prints one resolved."""
    if ctx.invoked_subcommand is None:
        _list_presets(as_json=as_json)


presets_app.command("show")(command(api.show_preset))
app.add_typer(presets_app, name="presets")


_plugin_commands_added = False


def _add_plugin_commands() -> None:
    """The command groups installed plugins register (kind ``command``); once per process."""
    global _plugin_commands_added
    if _plugin_commands_added:
        return
    _plugin_commands_added = True
    from bioim2im.plugin.manager import get_registry

    taken = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for component in get_registry():
        if component.kind != "command":
            continue
        if component.name in taken:
            raise PluginError(
                f"package '{component.package}' registers the command '{component.name}', "
                "which bioim2im already has"
            )
        app.add_typer(component.load(), name=component.name, help=component.description)
        taken.add(component.name)


def main() -> None:
    """Entry point: user errors become one message and exit status 2, never a traceback; what
    the machine refuses (disk full, permissions) one message and exit status 1."""
    usage_error, no_args = _click_usage_errors()
    try:
        _add_plugin_commands()
        code = app(standalone_mode=False)
    except no_args:
        sys.exit(2)  # the help was printed
    except usage_error as exc:
        # One line, like every other mistake, instead of a framed box.
        context: Any = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "bioim2im"
        _fail(f"{exc.format_message()} (see `{where} --help`)", 2)  # type: ignore[attr-defined]
    except UserError as exc:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        _fail(str(exc), exc.exit_code)
    except MemoryError:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        _fail(_NO_MEMORY, 1)
    except (OSError, RuntimeError) as exc:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        cause = os_error_cause(exc)
        if cause is not None:
            # A name too long or a loop of links is the path the user gave, not the machine.
            _fail(describe_os_error(cause), 2 if cause.errno in _PATH_ERRNOS else 1)
        if _out_of_memory(exc):
            _fail(f"{_NO_MEMORY} ({str(exc).strip().splitlines()[0]})", 1)
        raise
    except KeyboardInterrupt:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP})


def _click_usage_errors() -> tuple[type[Exception], type[Exception]]:
    """The command-line parser's usage errors (typer vendors click in recent releases)."""
    import importlib

    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            errors = importlib.import_module(module)
        except ImportError:  # pragma: no cover (the other typer)
            continue
        return errors.UsageError, errors.NoArgsIsHelpError
    raise ImportError("typer's command-line parser is not installed")


_NO_MEMORY = (
    "not enough memory for these settings: use smaller sizes (data.patch_size, "
    "data.batch_size, the network's channels, predict.roi_size or predict.batch_size)"
)


def _out_of_memory(exc: BaseException) -> bool:
    """torch reports a failed allocation as a RuntimeError (OutOfMemoryError on GPUs)."""
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or any(
        words in text for words in ("can't allocate memory", "not enough memory", "out of memory")
    )


def _fail(message: str, exit_code: int) -> None:
    from rich.markup import escape

    console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
