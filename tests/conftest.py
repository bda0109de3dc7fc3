"""Shared fixtures: run the CLI in-process and get its exit code and output."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# The tests train tiny networks: one thread each is faster than two threads fighting over two
# cores, and subprocesses (torchrun workers) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # strict_in_ci, tiny_presets
from strict_in_ci import importorskip_fails_in_ci

importorskip_fails_in_ci()

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "presets"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """``cli("check", "x.toml")`` runs ``bioim2im check x.toml`` in this process."""
    from bioim2im.cli import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str | Path) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["bioim2im", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def write_preset(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(text: str, name: str = "preset.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
