"""Every command's `--help` is plain text: help derived from API docstrings shows no reST
markup (``x`` literals, :func:`x` roles), for the core's commands and those of installed
plugins alike."""

from __future__ import annotations

import re
from collections.abc import Iterator

REST = re.compile(r"``|:(?:func|class|mod|meth|attr|data|obj|ref):`")


def _command_paths() -> Iterator[list[str]]:
    """Every command and command group, plugin ones included, as the words that name it."""
    import typer

    from bioim2im.cli import _add_plugin_commands, app

    _add_plugin_commands()  # as main() does before parsing

    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


def test_no_help_shows_rest_markup(cli) -> None:
    paths = list(_command_paths())
    assert ["evaluate"] in paths and ["presets", "show"] in paths
    shown = {}
    for path in paths:
        result = cli(*path, "--help")
        assert result.code == 0 and "Traceback" not in result.err, (path, result)
        marked = [line.strip() for line in result.out.splitlines() if REST.search(line)]
        if marked:
            shown[" ".join(path) or "bioim2im"] = marked
    assert shown == {}
