"""A setting that cannot apply is refused by name (exit 2, one message naming the key or file):
test-time augmentation over an axis the image does not have, a backbone without channels, an
``extends`` that names a directory, a preset that is a symlink loop."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hostile_helpers import assert_user_error, invoke


def test_check_refuses_tta_over_a_missing_axis(tiny_preset) -> None:
    assert_user_error(invoke("check", tiny_preset(), "--set", "predict.tta=[[5]]"), "predict.tta")


def test_predict_refuses_tta_over_a_missing_axis(
    trained_run: Path, nuclei_data: Path, tmp_path: Path
) -> None:
    result = invoke(
        "predict",
        trained_run,
        "-i",
        nuclei_data / "IM",
        "-o",
        tmp_path / "out",
        "--set",
        "predict.tta=[[5]]",
    )
    assert_user_error(result, "predict.tta")


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
