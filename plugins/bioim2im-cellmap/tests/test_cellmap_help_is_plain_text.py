"""The `bioim2im cellmap` commands' `--help` is plain text: no reST markup from the API
docstrings it is derived from (``head`` was shown with its backticks)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "command",
    [(), ("datasplit",), ("predict",), ("pack",), ("evaluate",)],
    ids=lambda c: " ".join(c) or "group",
)
def test_cellmap_help_shows_no_rest_markup(cli, command: tuple[str, ...]) -> None:
    result = cli("cellmap", *command, "--help")
    assert result.code == 0, result
    assert "``" not in result.out and ":func:`" not in result.out, result.out
