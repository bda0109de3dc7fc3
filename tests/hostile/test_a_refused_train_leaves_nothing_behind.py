"""A `train` that fails or is refused leaves nothing behind: no run directory it made (given or
the default runs/<preset>-<time>), a directory the user made kept as it was, and a run given to
``--resume`` together with a preset left unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hostile_helpers import assert_user_error, changes, invoke, snapshot


@pytest.fixture
def unusable_data(tmp_path: Path) -> Path:
    data = tmp_path / "empty"
    (data / "IM").mkdir(parents=True)
    (data / "GT").mkdir()
    return data


def test_a_failed_train_leaves_no_run_directory(
    tiny_preset, unusable_data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = invoke("train", tiny_preset(data=unusable_data), "--run-dir", run_dir)
    assert_user_error(result, str(unusable_data))
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())


def test_a_failed_train_keeps_a_run_directory_the_user_made(
    tiny_preset, unusable_data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    result = invoke("train", tiny_preset(data=unusable_data), "--run-dir", run_dir)
    assert_user_error(result)
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []


def test_a_failed_default_run_directory_is_removed(
    tiny_preset, unusable_data: Path, in_tmp: Path
) -> None:
    """Without --run-dir the run goes to runs/<preset>-<time>; a failure leaves none."""
    result = invoke("train", tiny_preset(data=unusable_data))
    assert_user_error(result)
    leftovers = list((in_tmp / "runs").glob("*")) if (in_tmp / "runs").exists() else []
    assert leftovers == []


# ---- --resume takes no preset ---------------------------------------------------------------
def test_resume_with_a_preset_argument_is_refused(
    trained_run: Path, tiny_preset, tmp_path: Path
) -> None:
    run_dir = Path(shutil.copytree(trained_run, tmp_path / "run"))
    before = snapshot(run_dir)
    result = invoke("train", tiny_preset(), "--resume", run_dir)
    assert_user_error(result, "--resume")
    assert changes(before, snapshot(run_dir)) == []
