"""`pip install` of the wheels, bioim2im's then the plugin's, into a fresh environment brings
the whole CellMap workflow back: the layout, the presets (the plugin's own copies), the
evaluation task and the `bioim2im cellmap` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.plugin_helpers import installed_wheels, run_installed

PLUGIN = Path(__file__).resolve().parents[1]
REPO = PLUGIN.parents[1]


@pytest.mark.slow
def test_the_wheels_bring_the_workflow_back(tmp_path: Path) -> None:
    installed = installed_wheels(tmp_path / "wheels", REPO, PLUGIN)
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str) -> str:
        result = run_installed(installed, work, *args, plugins="bioim2im-cellmap")
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    listed = {(c["kind"], c["name"]): c for c in json.loads(run("list-plugins", "--json"))}
    for key in (("layout", "cellmap"), ("evaluation", "cellmap"), ("command", "cellmap")):
        assert listed[key]["package"] == "bioim2im-cellmap", listed[key]
    presets = {row["name"]: row for row in json.loads(run("presets", "--json"))}
    shipped = Path(presets["cellmap-3d"]["path"])
    assert shipped.is_relative_to(installed), shipped  # the wheel's copy
    assert presets["cellmap-3d"]["package"] == "bioim2im-cellmap"
    assert '[data.layout]\nname = "cellmap"\n' in run("check", "cellmap-2d")
    commands = run("cellmap", "--help")
    assert all(name in commands for name in ("datasplit", "predict", "pack", "evaluate"))
