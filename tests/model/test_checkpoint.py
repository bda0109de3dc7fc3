"""Checkpoints are written atomically and read safely."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest
import torch

from bioim2im.errors import EnvironmentFailure, UserError
from bioim2im.model.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "step": 7}, path)
    state = load_checkpoint(path)
    assert state["step"] == 7 and torch.equal(state["model"]["w"], torch.ones(3))


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(EnvironmentFailure, match=r"last\.pt: No space left on device"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1, "w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(UserError, match="not a bioim2im checkpoint"):
        load_checkpoint(path)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    with open(path, "wb") as handle:
        torch.save(
            {"format": "bioim2im-checkpoint", "payload": Evil()}, handle, pickle_module=pickle
        )
    with pytest.raises(UserError, match="weights-only") as refused:
        load_checkpoint(path)
    # torch's advice to load it unsafely is not passed on.
    assert "weights_only=False" not in str(refused.value)
    assert "trust" not in str(refused.value).lower()


def test_a_failed_write_names_the_checkpoint_and_the_system_s_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    # A file-size limit makes writes fail as a full disk does (EFBIG instead of ENOSPC).
    script = f"""
import resource, signal, torch
from pathlib import Path
from bioim2im.errors import EnvironmentFailure
from bioim2im.model.checkpoint import save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    save_checkpoint({{"w": torch.zeros(100000)}}, Path({str(tmp_path / "c.pt")!r}))
except EnvironmentFailure as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"cannot write the checkpoint {tmp_path / 'c.pt'}: File too large" in out.stdout
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    from bioim2im.io.atomic import remove_stale_partials

    dead = tmp_path / ".last.pt.partial-999999999"
    dead.write_bytes(b"half")
    mine = tmp_path / f".last.pt.partial-{__import__('os').getpid()}"
    mine.write_bytes(b"in progress")
    assert remove_stale_partials(tmp_path) == [dead]
    assert not dead.exists() and mine.exists()
