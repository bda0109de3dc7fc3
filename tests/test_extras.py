"""Every optional extra is wired: code uses each of its packages and tells the user to install
the extra when it is missing. An extra nothing uses is an install that does nothing."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SOURCE = "\n".join(p.read_text() for p in (REPO / "src" / "bioim2im").rglob("*.py"))
EXTRAS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_every_extra_is_used_and_named_where_it_is_needed() -> None:
    assert set(EXTRAS) - {"dev"}, "no extras to check"
    for extra, requirements in EXTRAS.items():
        if extra == "dev":
            continue
        assert f"bioim2im[{extra}]" in SOURCE, f"no message tells users to install [{extra}]"
        for requirement in requirements:
            name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
            module = name.replace("-", "_").lower()
            assert re.search(rf"\b{module}\b", SOURCE), f"[{extra}] {name} is used nowhere"
