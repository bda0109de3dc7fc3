"""One command writes into an output folder at a time (issue 28): two ``predict`` runs into the
same folder made one exit 0 with hundreds of thousands of wrong pixels. The second is refused in
one message naming the first (process id, host, start time); the lock of a process that died is
taken over by the next command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import (
    assert_ok,
    assert_user_error,
    invoke,
    run,
    start,
    stray_files,
    wait_until,
)

LOCK = ".bioim2im.lock"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bioim2im.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("images")
    write_dataset(root, kind="nuclei", n_images=3, shape=(192, 192), seed=5, label_kind="semantic")
    return root / "IM"


def outputs(folder: Path) -> dict[str, np.ndarray]:
    import zarr

    found: dict[str, np.ndarray] = {}
    for path in sorted(folder.glob("*.ome.zarr")):
        group = zarr.open_group(path, mode="r")
        for name, member in group.members(max_depth=None):
            if isinstance(member, zarr.Array):
                found[f"{path.name}/{name}"] = np.asarray(member[...])
    return found


def assert_same_outputs(found: Path, expected: Path) -> None:
    have, want = outputs(found), outputs(expected)
    assert sorted(have) == sorted(want) and want
    for name, values in want.items():
        np.testing.assert_array_equal(have[name], values, err_msg=name)


def writing(out: Path) -> bool:
    """The command has taken the folder (its lock says who holds it) or started writing."""
    lock = out / LOCK
    try:
        if lock.stat().st_size > 0:
            return True
    except OSError:
        pass
    return out.is_dir() and any(p.name.endswith(".partial") for p in out.iterdir())


def predict_args(run_dir: Path, images: Path, out: Path) -> list[str | Path]:
    return ["predict", run_dir, "-i", images, "-o", out, "--set", "predict.batch_size=1"]


def test_a_second_predict_into_the_same_output_is_refused_naming_the_first(
    trained_run: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = start(*predict_args(trained_run, images, out), cwd=tmp_path)
    wait_until(lambda: writing(out), first, what="the first predict to take the output")
    first.send_signal(signal.SIGSTOP)  # holds the folder as long as the test needs
    try:
        second = run(*predict_args(trained_run, images, out), cwd=tmp_path, timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert_user_error(second, str(out), f"process {first.pid}", socket.gethostname())
    assert_ok(first.wait(timeout=120))
    assert_ok(invoke(*predict_args(trained_run, images, tmp_path / "alone")))
    assert_same_outputs(out, tmp_path / "alone")
    assert stray_files(out) == []


def test_the_lock_of_a_killed_predict_is_taken_over(
    trained_run: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = start(*predict_args(trained_run, images, out), cwd=tmp_path)
    wait_until(lambda: writing(out), first, what="the first predict to take the output")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert json.loads((out / LOCK).read_text())["pid"] == first.pid  # left by the kill
    assert_ok(invoke(*predict_args(trained_run, images, out)))
    assert_ok(invoke(*predict_args(trained_run, images, tmp_path / "alone")))
    assert_same_outputs(out, tmp_path / "alone")
    assert stray_files(out) == []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("holder", ["alive", "dead"])
def test_a_lock_still_held_is_taken_over_only_when_its_holder_is_gone(
    trained_run: Path, images: Path, tmp_path: Path, holder: str
) -> None:
    """A lock that stays held after its process died (a filesystem that keeps locks, a child
    that inherited it): taken over when the process it names is gone from this host."""
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    pid = os.getppid() if holder == "alive" else _dead_pid()
    lock = out / LOCK
    lock.write_text(
        json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2024-01-01T00:00:00"})
    )
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = invoke(*predict_args(trained_run, images, out))
    if holder == "alive":
        assert_user_error(result, str(out), f"process {pid}", "2024-01-01")
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
    else:
        assert_ok(result)
        assert len(outputs(out)) == 3 and stray_files(out) == []
