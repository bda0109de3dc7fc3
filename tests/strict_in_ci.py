"""In CI every optional integration is installed, so a test must never be skipped for a module
that is missing: with ``CI`` set, ``pytest.importorskip`` raises instead of skipping, and the run
fails naming the module (the README's test command installs what the tests need)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def importorskip_fails_in_ci() -> None:
    if not os.environ.get("CI"):
        return

    def importorskip(
        modname: str, minversion: str | None = None, reason: str | None = None, **_: object
    ) -> ModuleType:
        try:
            return importlib.import_module(modname)
        except ImportError as error:
            why = reason or str(error)
            raise ImportError(
                f"CI installs every test dependency, but {modname} is missing: {why}"
            ) from error

    pytest.importorskip = importorskip  # type: ignore[assignment]
