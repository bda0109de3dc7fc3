"""An export killed with SIGKILL cannot clean up after itself (issue 28: ``bioim2im-export-*``
folders piled up in the temporary folder). Its work files lie next to the output, and the next
export to that path removes what the killed one left; nothing goes to the shared temporary
folder."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import pytest
from hostile_helpers import assert_ok, invoke, start, wait_until


def test_what_a_killed_export_left_is_removed_by_the_next_one(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    # The temporary folder of this process and of the one it starts: this test's own.
    monkeypatch.setenv("TMPDIR", str(temporary))
    monkeypatch.setattr(tempfile, "tempdir", None)
    out = tmp_path / "exports" / "model.zip"
    args = ["export", trained_run, "-f", "bioimageio", "-o", out]

    def working() -> bool:
        scratch = out.parent.is_dir() and any(out.parent.glob(".model.zip.partial-scratch-*"))
        return scratch or any(temporary.glob("bioim2im-export-*"))

    process = start(*args, cwd=tmp_path, env={"TMPDIR": str(temporary)})
    wait_until(working, process, what="the export's work files")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)

    assert_ok(invoke(*args))
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.zip"]
    assert sorted(p.name for p in temporary.glob("bioim2im-*")) == []
