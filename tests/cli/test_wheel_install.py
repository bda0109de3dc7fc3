"""A user who runs `pip install bioim2im` (no clone) names presets: the built wheel, installed
into a fresh virtual environment, trains `segmentation-2d` by name from an empty folder, with
the presets it carries (never the repository's)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.plugin_helpers import installed_wheels, run_installed

from bioim2im.data.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding only the wheel (plugins installed here are not loaded)."""
    return installed_wheels(tmp_path_factory.mktemp("wheel"), REPO)


def _run(env_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_installed(env_dir, cwd, *args)


@pytest.mark.slow
def test_the_installed_wheel_trains_a_preset_by_name(installed: Path, tmp_path: Path) -> None:
    data = write_dataset(
        tmp_path / "data", kind="nuclei", n_images=3, shape=(32, 32), label_kind="semantic"
    )
    empty = tmp_path / "work"
    empty.mkdir()

    listed = _run(installed, empty, "presets", "--json")
    assert listed.returncode == 0, listed.stderr
    presets = {row["name"]: row for row in json.loads(listed.stdout)}
    shipped = Path(presets["segmentation-2d"]["path"])
    assert shipped.is_relative_to(installed), shipped  # the wheel's copy, not the repository's
    assert shipped.read_text() == (REPO / "presets" / "segmentation-2d.toml").read_text()

    trained = _run(
        installed,
        empty,
        "train",
        "segmentation-2d",
        "--set",
        f"data.path={data}",
        "--set",
        "data.patch_size=[32, 32]",
        "--set",
        "data.num_workers=0",
        "--set",
        "data.batch_size=2",
        "--set",
        "model.backbone.channels=[4, 8]",
        "--set",
        "model.backbone.strides=[2]",
        "--set",
        "train.steps=2",
        "--set",
        "train.val_every=2",
        "--run-dir",
        "run",
    )
    assert trained.returncode == 0, trained.stderr
    assert (empty / "run" / "checkpoints" / "best.pt").is_file()
    assert "[model.heads.seg]" in (empty / "run" / "preset.toml").read_text()
