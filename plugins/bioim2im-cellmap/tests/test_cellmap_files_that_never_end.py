"""Where a CellMap command expects a file it reads (a datasplit, a test-crop manifest), a FIFO
(which blocks a read forever) or a device that never ends (``/dev/zero``) is refused with one
message, at once, without reading it. Each command runs in a process of its own with a time
limit and a memory limit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile_helpers import Limits, assert_user_error, endless, run

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def _cli(*args: str | Path, cwd: Path) -> object:
    return run(*args, cwd=cwd, limits=Limits(extra_memory=1 << 30), timeout=60)


def _expect(result: object, path: Path | str) -> None:
    assert_user_error(result, str(path))  # type: ignore[arg-type]
    assert "regular file" in result.err, result  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_cellmap_datasplit_or_crop_manifest(trained_run: Path, tmp_path: Path, kind: str) -> None:
    split = endless(kind, tmp_path / "datasplit.csv")
    result = _cli("check", "cellmap-3d", "--data", "--set", f"data.path={split}", cwd=tmp_path)
    _expect(result, split)
    crops = endless(kind, tmp_path / "test_crops.csv")
    result = _cli(
        "cellmap",
        "predict",
        trained_run,
        "--crops",
        crops,
        "--raw",
        tmp_path / "{dataset}.zarr",
        "-o",
        tmp_path / "out.zarr",
        cwd=tmp_path,
    )
    _expect(result, crops)
