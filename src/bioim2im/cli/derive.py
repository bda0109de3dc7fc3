"""Commands derived from API functions: each option is written once, on the function's
parameters (:mod:`bioim2im.api.options`), and the command line only parses, calls and prints.

:func:`command` turns an API function into a typer command: ``Arg`` parameters become
arguments, ``Opt`` parameters options (a list: repeatable), ``PythonOnly`` ones are left out.
What the function returns is printed: its ``stdout_text()`` on standard output, the object
itself (a rich renderable) on the chosen console, its ``to_json()`` with ``--json`` where the
command offers it; an ``error`` it carries (a report shown, then its problems) is raised after.
Plugins derive their commands with it too.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from bioim2im.api.options import Arg, Opt, PythonOnly


def command(
    function: Callable[..., Any],
    *,
    stdout: bool = False,
    json_option: bool = False,
) -> Callable[..., None]:
    """A typer command calling ``function`` with what the command line gives.

    ``stdout``: print the result on standard output (a listing), else on standard error (a
    summary of what was done). ``json_option``: add ``--json``, which prints ``to_json()``
    instead.
    """
    hints = _parameter_hints(function)
    signature = inspect.signature(function)
    parameters: list[inspect.Parameter] = []
    lists: list[str] = []
    for name, parameter in signature.parameters.items():
        mark, base = _mark(hints.get(name), function, name)
        if isinstance(mark, PythonOnly):
            continue
        cli_type, repeatable = _cli_type(base, function, name)
        default = parameter.default
        if repeatable:
            lists.append(name)
            default = None
        if isinstance(mark, Arg):
            info: Any = typer.Argument(
                help=_plain(mark.help), metavar=mark.metavar, show_default=False
            )
        else:
            flags = mark.flags or ("--" + name.replace("_", "-"),)
            shown = default not in (None, False, (), inspect.Parameter.empty)
            info = typer.Option(
                *flags, help=_plain(mark.help), metavar=mark.metavar, show_default=shown
            )
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[cli_type, info],
            )
        )
    if json_option:
        parameters.append(
            inspect.Parameter(
                "as_json",
                inspect.Parameter.KEYWORD_ONLY,
                default=False,
                annotation=Annotated[bool, typer.Option("--json", help="Print JSON instead.")],
            )
        )

    @functools.wraps(function)
    def run(**given: Any) -> None:
        as_json = bool(given.pop("as_json", False))
        for name in lists:
            given[name] = tuple(given.get(name) or ())
        emit(function(**given), stdout=stdout, as_json=as_json)

    del run.__wrapped__  # typer reads the signature below, not the function's
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    run.__doc__ = _help(function)
    return run


def emit(result: Any, *, stdout: bool = False, as_json: bool = False) -> None:
    """Print what a command returned (see the module docstring)."""
    if result is None:
        return
    if as_json and hasattr(result, "to_json"):
        print(json.dumps(result.to_json(), indent=2))
    else:
        text = result.stdout_text() if hasattr(result, "stdout_text") else ""
        if text:
            sys.stdout.write(text)
        if hasattr(result, "__rich_console__"):
            console(stderr=not stdout).print(result)
    error = getattr(result, "error", None)
    if error is not None:
        raise error


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True)


def _help(function: Callable[..., Any]) -> str:
    """The command's help: the first paragraph of the function's docstring, as plain text."""
    doc = inspect.getdoc(function) or ""
    return _plain(doc.split("\n\n", 1)[0])


# reST in docstrings: ``literal`` and :role:`target` (``~`` shortens a target to its last part).
_REST = re.compile(r"``(.+?)``|:[a-z]+(?::[a-z]+)?:`(~?)([^`]+)`", re.S)


def _plain(text: str) -> str:
    """``text`` with its reST literals and roles written as the help's other code is: `x`."""

    def code(match: re.Match[str]) -> str:
        literal, short, target = match.groups()
        if literal is None:
            literal = target.rsplit(".", 1)[-1] if short else target
        return f"`{literal}`"

    return _REST.sub(code, text)


def _parameter_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """The parameters' annotations, evaluated with their ``Annotated`` marks (the return
    annotation is left alone: it may name a type imported for type checkers only)."""

    class Parameters:
        __annotations__ = {k: v for k, v in function.__annotations__.items() if k != "return"}

    return typing.get_type_hints(
        Parameters, globalns=getattr(function, "__globals__", {}), include_extras=True
    )


def _mark(hint: Any, function: Callable[..., Any], name: str) -> tuple[Any, Any]:
    if typing.get_origin(hint) is Annotated:
        base, *marks = typing.get_args(hint)
        for mark in marks:
            if isinstance(mark, (Arg, Opt, PythonOnly)):
                return mark, base
    raise TypeError(
        f"{function.__qualname__}: parameter '{name}' needs Arg, Opt or PythonOnly "
        "(see bioim2im.api.options) to be derived as a command"
    )


def _cli_type(annotation: Any, function: Callable[..., Any], name: str) -> tuple[Any, bool]:
    """(the type the command line parses, whether the option is repeatable)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        optional = len(members) < len(args)
        if str in members:  # text the function reads as a path, a name or a URL
            chosen: Any = str
        elif any(_is_path(m) for m in members):
            chosen = Path
        elif len(members) == 1:
            chosen, repeatable = _cli_type(members[0], function, name)
            if repeatable:
                return chosen, True
        else:
            raise TypeError(f"{function.__qualname__}: '{name}' has no command-line type")
        return typing.Optional[chosen] if optional else chosen, False  # noqa: UP045
    if origin in (list, tuple, Sequence, typing.Sequence):
        item, _ = _cli_type(args[0], function, name)
        return typing.Optional[list[item]], True  # type: ignore[valid-type]  # noqa: UP045
    if _is_path(annotation):
        return Path, False
    return annotation, False


def _is_path(annotation: Any) -> bool:
    return (
        annotation is Path
        or typing.get_origin(annotation) is os.PathLike
        or (annotation is os.PathLike)
    )
