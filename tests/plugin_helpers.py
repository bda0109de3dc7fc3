"""Installing a plugin of plugins/ for real, and the registry a fresh process would build."""

from __future__ import annotations

import importlib
import os
import site
import subprocess
import sys
import sysconfig
import venv
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


def installed_wheels(root: Path, *projects: Path) -> Path:
    """A fresh virtual environment in ``root/venv`` holding the wheels of ``projects``, built
    here and installed in order (the core before its plugins). Their other requirements (torch,
    MONAI...) come from this environment through a path file, so nothing is downloaded."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    wheels = []
    for project in projects:
        folder = root / f"wheel-{len(wheels)}"
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", folder,
             project],
            check=True,
            capture_output=True,
            timeout=300,
        )  # fmt: skip
        (wheel,) = folder.glob("*.whl")
        wheels.append(wheel)
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Appended after the new environment's own site-packages: the wheels' packages win.
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "requirements-from-test.pth").write_text("\n".join(sorted(ours)) + "\n")
    for wheel in wheels:
        subprocess.run(
            [*pip, "--python", python, "install", "--no-deps", "--no-index", wheel],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return env_dir


def run_installed(
    env_dir: Path, cwd: Path, *args: str, plugins: str = "none"
) -> subprocess.CompletedProcess[str]:
    """``bioim2im ARGS`` of ``env_dir``, loading only the installed ``plugins``
    (``BIOIM2IM_PLUGINS``: plugins installed in this environment, which the path file makes
    visible, are not the wheels')."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environ["BIOIM2IM_PLUGINS"] = plugins
    return subprocess.run(
        [env_dir / "bin" / "bioim2im", *args],
        cwd=cwd,
        env={**environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
