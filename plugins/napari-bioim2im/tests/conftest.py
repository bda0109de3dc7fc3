"""The plugin's tests: a virtual screen for napari's OpenGL canvas, a tiny trained run, tiny
images, and the notifications napari shows.

napari draws with OpenGL, which Qt's ``offscreen`` platform cannot give a widget, so these
tests start their own X server (``Xvfb``, from Debian's ``xvfb``) and use Qt's ``xcb`` platform
on it; a developer's own screen is never used. Without Xvfb (or napari) they are left out, except in CI
(``CI`` set), where that is an error: CI installs it (``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The core's test helpers (tests/tiny_presets.py): the plugin is tested with the same tiny preset.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from napari_helpers import TINY, nuclei, write_nuclei

from strict_in_ci import importorskip_fails_in_ci
from tiny_presets import tiny_unet_toml

importorskip_fails_in_ci()

os.environ.setdefault("OMP_NUM_THREADS", "1")
IN_CI = bool(os.environ.get("CI"))
MISSING: str | None = None
"""Why these tests cannot run here (None: they can)."""
try:
    import napari  # noqa: F401
    import napari_bioim2im  # noqa: F401
except ImportError as exc:
    MISSING = f"{exc.name} is not installed (pip install -e 'plugins/napari-bioim2im[testing]')"


def _start_virtual_screen() -> subprocess.Popen[bytes] | None:
    """Xvfb on a free display; its number is what it writes to the pipe ``-displayfd`` names."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        return None
    read, write = os.pipe()
    process = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        display = pipe.readline().strip()
    if not display:
        process.kill()
        return None
    os.environ["DISPLAY"] = f":{display}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    return process


SCREEN = _start_virtual_screen() if MISSING is None else None
if MISSING is None and SCREEN is None:
    MISSING = "no Xvfb for napari's OpenGL canvas (apt-get install xvfb)"
if MISSING is not None:
    if IN_CI:  # CI installs everything: a test that cannot run there is a failure
        raise RuntimeError(f"napari-bioim2im tests: {MISSING}")
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header(config: pytest.Config) -> str | None:
    return None if MISSING is None else f"napari-bioim2im tests left out: {MISSING}"


def pytest_unconfigure(config: pytest.Config) -> None:
    if SCREEN is not None:
        SCREEN.terminate()
        SCREEN.wait(timeout=10)


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nuclei(tmp_path_factory.mktemp("nuclei"), 4)


@pytest.fixture(scope="session")
def tiny_preset(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    def make(base: str = "instance-2d") -> Path:
        path = tmp_path_factory.mktemp("presets") / f"tiny-{base}.toml"
        path.write_text(tiny_unet_toml(data, TINY, extends=base), encoding="utf-8")
        return path

    return make


@pytest.fixture(scope="session")
def instance_run(
    tiny_preset: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny run of ``instance-2d`` (labels out), trained once for the session."""
    from bioim2im import api

    run_dir = tmp_path_factory.mktemp("runs") / "instance"
    return api.train(tiny_preset("instance-2d"), run_dir=run_dir).run_dir


@pytest.fixture(scope="session")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96 x 128 image: 12 blocks of 32 x 32 with ``predict.block_size=[32, 32]``."""
    import tifffile

    path = tmp_path_factory.mktemp("image") / "cells.tif"
    tifffile.imwrite(path, nuclei((96, 128), seed=7, count=10)[0])
    return path


@pytest.fixture
def notifications(qapp: Any) -> Iterator[list[Any]]:
    """The notifications napari shows during the test (their severity and message)."""
    from napari.utils.notifications import notification_manager

    shown: list[Any] = []
    notification_manager.notification_ready.connect(shown.append)
    yield shown
    notification_manager.notification_ready.disconnect(shown.append)
