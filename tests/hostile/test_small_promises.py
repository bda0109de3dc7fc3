"""Issue 11, point 8: the small ones. (Temporary files left by a kill during a checkpoint
write, and metrics rows repeated after a resume, are in test_kill_anywhere.py.)"""

from __future__ import annotations

import fractions
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_helpers import (
    assert_ok,
    assert_user_error,
    changes,
    invoke,
    snapshot,
)


# ---- checkpoints that safe loading refuses --------------------------------------------------
class _CallsGetcwd:
    """Unpickles by calling os.getcwd: harmless, and outside torch's safe list."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getcwd, ())


@pytest.mark.parametrize("payload", ["object", "call"])
def test_the_weights_only_refusal_does_not_advise_unsafe_loading(
    trained_run: Path, nuclei_data: Path, tmp_path: Path, payload: str
) -> None:
    state = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    state["note"] = fractions.Fraction(1, 3) if payload == "object" else _CallsGetcwd()
    torch.save(state, tmp_path / "odd.pt")
    result = invoke("predict", tmp_path / "odd.pt", "-i", nuclei_data / "IM", "-o", tmp_path / "o")
    assert_user_error(result, "odd.pt")
    message = result.err.replace(str(tmp_path), "TMP")
    for advice in (
        r"weights_only.{0,40}False",
        "can still be loaded",
        "trust the source",
        "arbitrary code",
        "add_safe_globals",
        "safe_globals",
    ):
        assert not re.search(advice, message, re.S | re.I), result
    assert "\x1b[" not in message, "terminal escape codes in the message"


# ---- wording that names what is wrong ------------------------------------------------------
def test_empty_backbone_channels_names_the_key(tiny_preset) -> None:
    result = invoke("check", tiny_preset(), "--set", "model.backbone.channels=[]")
    assert_user_error(result, "model.backbone.channels")


def test_extends_naming_a_directory_says_so(tmp_path: Path) -> None:
    (tmp_path / "base.toml").mkdir()
    preset = tmp_path / "child.toml"
    preset.write_text('extends = "base.toml"\n', encoding="utf-8")
    result = invoke("check", preset)
    assert_user_error(result, "base.toml")
    assert "director" in result.err.replace(str(tmp_path), "TMP").lower(), result


def _symlink_loop(folder: Path) -> Path:
    (folder / "a.toml").symlink_to(folder / "b.toml")
    (folder / "b.toml").symlink_to(folder / "a.toml")
    return folder / "a.toml"


@pytest.mark.parametrize("how", ["given", "extended"])
def test_a_symlink_loop_is_named(tmp_path: Path, how: str) -> None:
    loop = _symlink_loop(tmp_path)
    if how == "given":
        result = invoke("check", loop)
    else:
        preset = tmp_path / "child.toml"
        preset.write_text('extends = "a.toml"\n', encoding="utf-8")
        result = invoke("check", preset)
    assert_user_error(result, "a.toml")
    message = result.err.replace(str(tmp_path), "TMP")
    assert re.search(r"symlink|symbolic link|link loop|loop", message, re.I), result


# ---- a failed train leaves nothing behind ---------------------------------------------------
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


# ---- NaN in a regression prediction ---------------------------------------------------------
def test_a_nan_in_a_regression_prediction_is_refused(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    for i in range(2):
        truth = rng.random((32, 32), dtype=np.float32)
        pred = truth + np.float32(0.1)
        if i == 0:
            pred[3, 4] = np.nan
        tifffile.imwrite(tmp_path / "truth" / f"im{i}.tif", truth)
        tifffile.imwrite(tmp_path / "pred" / f"im{i}.tif", pred)
    args = ["evaluate", "-p", tmp_path / "pred", "-t", tmp_path / "truth", "--task", "regression"]
    assert_user_error(invoke(*args, "--json", tmp_path / "r.json"), "im0")
    assert not (tmp_path / "r.json").exists()
    # Without the NaN the same images are scored.
    pred = tifffile.imread(tmp_path / "pred" / "im0.tif")
    tifffile.imwrite(tmp_path / "pred" / "im0.tif", np.nan_to_num(pred, nan=0.5))
    assert_ok(invoke(*args))
