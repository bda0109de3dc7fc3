"""The example third-party plugin, installed for real into a scratch directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "plugins" / "bioim2im-example"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
    )
    return target


def _bioim2im(plugin_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "bioim2im", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_example_plugin_components_are_listed_with_their_package(plugin_path: Path) -> None:
    result = _bioim2im(plugin_path, "list-plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    for key in (
        ("backbone", "tiny_cnn"),
        ("loss", "charbonnier"),
        ("preset", "example-denoise-2d"),
    ):
        assert rows[key]["package"] == "bioim2im-example"
        assert rows[key]["version"] == "0.1.0"
    assert rows[("backbone", "unet")]["package"] == "bioim2im"


def test_a_preset_using_the_plugin_passes_check(plugin_path: Path, tmp_path: Path) -> None:
    preset = tmp_path / "mine.toml"
    preset.write_text(
        'extends = "example-denoise-2d"\n[model.backbone]\nname = "tiny_cnn"\nwidth = 8\n'
    )
    result = _bioim2im(plugin_path, "check", str(preset))
    assert result.returncode == 0, result.stderr
    assert 'name = "tiny_cnn"' in result.stdout
    assert 'name = "charbonnier"' in result.stdout
    bad = _bioim2im(plugin_path, "check", str(preset), "--set", "model.backbone.widht=4")
    assert bad.returncode == 2
    assert "model.backbone.widht: unknown key; did you mean 'width'?" in bad.stderr


def test_restricting_plugins_hides_the_example(plugin_path: Path) -> None:
    env_result = subprocess.run(
        [sys.executable, "-m", "bioim2im", "list-plugins", "--kind", "backbone", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(plugin_path), "BIOIM2IM_PLUGINS": "none"},
    )
    assert env_result.returncode == 0, env_result.stderr
    assert "tiny_cnn" not in {r["name"] for r in json.loads(env_result.stdout)}
