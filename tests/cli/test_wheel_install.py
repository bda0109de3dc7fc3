"""A user who runs `pip install bioim2im` (no clone) names presets: the built wheel, installed
into a fresh virtual environment, trains `segmentation-2d` by name from an empty folder, with
the presets it carries (never the repository's)."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from bioim2im.data.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding only the wheel; its other requirements (torch, MONAI...)
    come from this environment through a path file, so nothing is downloaded."""
    root = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", root, REPO],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = root.glob("bioim2im-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Appended after the new environment's own site-packages: the wheel's bioim2im wins.
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "requirements-from-test.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run(
        [*pip, "--python", python, "install", "--no-deps", "--no-index", wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return env_dir


def _run(env_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [env_dir / "bin" / "bioim2im", *args],
        cwd=cwd,
        env={**environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=300,
    )


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
