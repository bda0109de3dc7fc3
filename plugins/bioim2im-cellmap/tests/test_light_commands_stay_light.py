"""The plugin keeps bioim2im's light commands light: listing it, checking its presets and the
help of its commands import no heavy library (its hook and layout modules import none)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from bioim2im.cli import main
sys.argv = ["bioim2im", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "monai", "zarr", "scipy", "skimage") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ("check", "cellmap-3d"),
        ("cellmap", "--help"),
        ("list-plugins", "--kind", "layout", "--params"),
        ("options", "data.layout"),
    ],
)
def test_light_commands_import_no_heavy_library(args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    assert "HEAVY=\n" in result.stderr or result.stderr.rstrip().endswith("HEAVY="), result.stderr
    assert "cellmap" in result.stdout, result.stdout
