"""`bioim2im check`: every shipped preset passes; resolution, extends and --set behave."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bioim2im.config import load_preset

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PRESETS = Path(__file__).resolve().parents[2] / "presets"
SHIPPED = sorted(PRESETS.glob("*.toml"))


def test_the_required_presets_are_shipped() -> None:
    names = {p.stem for p in SHIPPED}
    assert {
        "segmentation-2d",
        "segmentation-3d",
        "instance-2d",
        "instance-3d",
        "labelfree-3d",
        "restoration-2d",
        "n2v-2d",
        "pix2pix-2d",
        "multitask-3d",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_preset_passes_check_and_round_trips(cli, path: Path, tmp_path: Path) -> None:
    result = cli("check", path)
    assert result.code == 0, result.err
    assert "is valid" in result.err
    resolved = tomllib.loads(result.out)
    assert "extends" not in resolved
    assert resolved["model"]["heads"]
    # The printed preset is complete: checking it again gives the very same TOML.
    again = tmp_path / "resolved.toml"
    again.write_text(result.out)
    second = cli("check", again)
    assert second.code == 0, second.err
    assert second.out == result.out


def test_extends_file_and_set_precedence(cli, write_preset) -> None:
    path = write_preset(
        """
extends = "segmentation-2d"
[data]
batch_size = 4
[train]
steps = 50
"""
    )
    base = tomllib.loads(cli("check", PRESETS / "segmentation-2d.toml").out)
    result = cli("check", path, "--set", "train.steps=75", "--set", "data.patch_size=[64, 64]")
    assert result.code == 0, result.err
    resolved = tomllib.loads(result.out)
    assert resolved["data"]["batch_size"] == 4  # the file beats its base
    assert resolved["train"]["steps"] == 75  # --set beats the file
    assert resolved["data"]["patch_size"] == [64, 64]
    assert resolved["train"]["optimizer"] == base["train"]["optimizer"]  # inherited untouched
    assert resolved["model"] == base["model"]


def test_later_set_wins_and_values_are_toml_typed(write_preset) -> None:
    path = write_preset('extends = "segmentation-2d"\n')
    preset = load_preset(
        path,
        [
            "train.steps=10",
            "train.steps=20",
            "train.compile=true",
            "train.optimizer={name = 'sgd', lr = 0.1, momentum = 0.9}",
            "data.path=some/folder",
        ],
    )
    assert preset.train.steps == 20
    assert preset.train.compile is True
    assert preset.train.optimizer.name == "sgd"
    assert preset.train.optimizer.params()["momentum"] == 0.9
    assert preset.data.path == (Path.cwd() / "some/folder").resolve()


def test_changing_a_component_name_drops_the_old_parameters(write_preset) -> None:
    path = write_preset(
        """
extends = "segmentation-2d"
[model.backbone]
name = "basic_unet"
"""
    )
    preset = load_preset(path)
    assert preset.model.backbone.name == "basic_unet"
    assert "num_res_units" not in preset.model.backbone.params()
    # The same rule for --set; a head keeps its loss and target when its component changes.
    preset = load_preset(path, ["model.heads.seg.name=identity", "model.heads.seg.out_channels=16"])
    assert preset.model.heads["seg"].loss.name == "dice_ce"


def test_relative_data_path_is_relative_to_the_preset_file(write_preset, tmp_path: Path) -> None:
    path = write_preset('extends = "segmentation-2d"\n[data]\npath = "images"\n')
    assert load_preset(path).data.path == tmp_path / "images"


def test_extends_a_toml_file_next_to_the_preset(write_preset) -> None:
    write_preset('extends = "segmentation-2d"\n[train]\nsteps = 7\n', "base.toml")
    child = write_preset('extends = "base.toml"\n[data]\nbatch_size = 2\n', "child.toml")
    preset = load_preset(child)
    assert (preset.train.steps, preset.data.batch_size) == (7, 2)


def test_a_preset_by_name_and_what_a_name_cannot_be(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    by_name = cli("check", "segmentation-2d")
    assert by_name.code == 0, by_name.err
    assert by_name.out == cli("check", PRESETS / "segmentation-2d.toml").out
    typo = cli("check", "segmentaton-2d")
    assert typo.code == 2
    assert "did you mean 'segmentation-2d'" in typo.err and "Traceback" not in typo.err
    # A file named like a preset is not silently taken for either.
    (tmp_path / "segmentation-2d").write_text('extends = "segmentation-2d"\n')
    both = cli("check", "segmentation-2d")
    assert both.code == 2
    assert "both a preset name and a file" in both.err and "./segmentation-2d" in both.err
    assert cli("check", "./segmentation-2d").code == 0
