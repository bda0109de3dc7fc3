"""With CI set, a test whose optional module is missing fails instead of being skipped: the
integrations (MLflow, Dask, S3, neuroglancer, OME-Zarr readers) are tested in CI, never left out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

NEEDS_A_MISSING_MODULE = """
import pytest
module = pytest.importorskip("bioim2im_no_such_module")
def test_uses_it():
    pass
"""


def _pytest(folder: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    (folder / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
        "from strict_in_ci import importorskip_fails_in_ci\nimportorskip_fails_in_ci()\n",
        encoding="utf-8",
    )
    (folder / "test_integration.py").write_text(NEEDS_A_MISSING_MODULE, encoding="utf-8")
    (folder / "test_core.py").write_text("def test_core():\n    pass\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=120,
    )


def test_a_missing_integration_fails_in_ci(tmp_path: Path) -> None:
    run = _pytest(tmp_path, ci=True)
    assert run.returncode != 0
    assert "CI installs every test dependency, but bioim2im_no_such_module is missing" in run.stdout


def test_outside_ci_it_is_left_out(tmp_path: Path) -> None:
    run = _pytest(tmp_path, ci=False)
    assert run.returncode == 0, run.stdout
    assert "1 passed, 1 skipped" in run.stdout
