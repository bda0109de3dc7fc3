"""Installing a plugin of plugins/ for real, and the registry a fresh process would build."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def install_plugin(name: str, target: Path) -> Path:
    """``plugins/<name>`` installed into ``target`` (offline; its requirements are those of
    the dev extra)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(PLUGINS / name)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return target


@contextmanager
def registry_with(site: Path) -> Iterator[Any]:
    """The registry of this environment plus what is installed in ``site``."""
    from bioim2im.plugin import manager

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        yield manager.build_registry(manager.discover())
