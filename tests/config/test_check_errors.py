"""Every user mistake in a preset: exit 2, all problems at once, key paths, suggestions."""

from __future__ import annotations

from pathlib import Path

import pytest

BASE = 'extends = "segmentation-2d"\n'


def _check(cli, write_preset, text: str, *args: str):
    result = cli("check", write_preset(text), *args)
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err
    assert result.out == ""  # nothing half-printed on stdout
    return result.err


def test_misspelt_key_suggests(cli, write_preset) -> None:
    err = _check(cli, write_preset, BASE + "[data]\npatch_sise = [64, 64]\n")
    assert "data.patch_sise: unknown key; did you mean 'patch_size'?" in err


def test_misspelt_section_suggests(cli, write_preset) -> None:
    err = _check(cli, write_preset, BASE + "[trian]\nsteps = 3\n")
    assert "trian: unknown key; did you mean 'train'?" in err


def test_wrong_type_names_key_and_value(cli, write_preset) -> None:
    err = _check(cli, write_preset, BASE + '[train]\nsteps = "many"\n')
    assert "train.steps:" in err
    assert "'many'" in err


def test_unknown_component_suggests_and_lists(cli, write_preset) -> None:
    err = _check(cli, write_preset, BASE + '[model.backbone]\nname = "unett"\n')
    assert "model.backbone.name: unknown backbone 'unett'; did you mean 'unet'?" in err
    assert "basic_unet" in err  # the valid names are listed


def test_unknown_loss_inside_a_head(cli, write_preset) -> None:
    err = _check(
        cli, write_preset, BASE + '[model.heads.seg]\nname = "conv"\nloss = { name = "dice_cee" }\n'
    )
    assert "model.heads.seg.loss.name: unknown loss 'dice_cee'; did you mean 'dice_ce'?" in err


def test_unknown_component_parameter(cli, write_preset) -> None:
    err = _check(cli, write_preset, BASE + '[model.backbone]\nname = "unet"\nnum_res_unit = 1\n')
    assert "model.backbone.num_res_unit: unknown key; did you mean 'num_res_units'?" in err


def test_wrong_type_of_component_parameter(cli, write_preset) -> None:
    err = _check(cli, write_preset, BASE + '[model.backbone]\nname = "unet"\nchannels = "wide"\n')
    assert "model.backbone.channels:" in err


def test_missing_required_component_parameter(cli, write_preset) -> None:
    err = _check(cli, write_preset, BASE + '[model.backbone]\nname = "unetr"\n')
    assert "model.backbone.img_size: required key is missing" in err


def test_all_problems_are_reported_at_once(cli, write_preset) -> None:
    err = _check(
        cli,
        write_preset,
        BASE
        + '[data]\npatch_sise = [64, 64]\nbatch_size = 0\n[train]\nsteps = "x"\n[model.backbone]\nname = "unett"\n',
    )
    assert "4 problems" in err
    for key in ("data.patch_sise", "data.batch_size", "train.steps", "model.backbone.name"):
        assert key in err


def test_cross_section_rule_names_both_keys(cli, write_preset) -> None:
    err = _check(cli, write_preset, BASE + "[predict]\nroi_size = [64, 64, 64]\n")
    assert "predict.roi_size" in err and "data.patch_size" in err


def test_patch_size_must_suit_the_backbone(cli, write_preset) -> None:
    err = _check(cli, write_preset, BASE + "[data]\npatch_size = [100, 100]\n")
    assert "data.patch_size [100, 100] must be divisible by 8" in err
    assert "try [104, 104]" in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("train.steps", "expected KEY.PATH=VALUE"),
        ("=5", "expected KEY.PATH=VALUE"),
        ("train..steps=5", "expected KEY.PATH=VALUE"),
        ("train.steps.x=5", "'train.steps' is a value (2000), not a table"),
    ],
)
def test_bad_set(cli, write_preset, option: str, message: str) -> None:
    err = _check(cli, write_preset, BASE, "--set", option)
    assert message in err


def test_set_with_a_bad_value_is_a_validation_error(cli, write_preset) -> None:
    err = _check(cli, write_preset, BASE, "--set", "train.amp=fast")
    assert "train.amp:" in err and "'fast'" in err


def test_missing_preset_file(cli, tmp_path: Path) -> None:
    result = cli("check", tmp_path / "nope.toml")
    assert result.code == 2
    assert f"preset file not found: {tmp_path / 'nope.toml'}" in result.err


def test_invalid_toml_names_the_line(cli, write_preset) -> None:
    err = _check(cli, write_preset, "[data]\npatch_size = [64, 64\nbatch_size = 2\n")
    assert "is not valid TOML" in err
    assert "line 3" in err or "line 2" in err


def test_unknown_extends_suggests(cli, write_preset) -> None:
    err = _check(cli, write_preset, 'extends = "segmentation2d"\n')
    assert "unknown preset 'segmentation2d'; did you mean 'segmentation-2d'?" in err


def test_extends_cycle(cli, write_preset) -> None:
    write_preset('extends = "b.toml"\n', "a.toml")
    write_preset('extends = "a.toml"\n', "b.toml")
    result = cli("check", write_preset('extends = "a.toml"\n', "c.toml"))
    assert result.code == 2
    assert "cycle" in result.err


def test_no_heads_is_an_error(cli, write_preset) -> None:
    text = """
[data]
patch_size = [64, 64]
[model.backbone]
name = "unet"
[model.heads]
"""
    err = _check(cli, write_preset, text)
    assert "model.heads" in err


PIX2PIX = 'extends = "pix2pix-2d"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            BASE + "[predict]\nroi_size = [32, 32, 32]\n",
            "predict.roi_size has 3 numbers but data.patch_size has 2 (YX); give 2",
        ),
        (
            BASE + "[data]\nvoxel_size = [1.0, 0.5, 0.5]\n",
            "data.voxel_size has 3 numbers but data.patch_size has 2",
        ),
        (BASE + "[predict]\noverlap = [0.25]\n", "predict.overlap has 1 numbers"),
        (
            BASE + '[data]\naxes = "ZYX"\n',
            "data.axes 'ZYX' has 3 spatial axes but data.patch_size has 2",
        ),
        (
            PIX2PIX + '[adversarial]\nhead = "seg"\n',
            "adversarial.head 'seg' is not a head; heads: ['translated']",
        ),
        (
            PIX2PIX + "[adversarial]\ncycle = true\n",
            "adversarial.cycle = true (CycleGAN) needs data.unpaired = true",
        ),
        (
            BASE + "[data]\nunpaired = true\n",
            "data.unpaired = true needs [adversarial] with cycle = true (CycleGAN)",
        ),
        (
            PIX2PIX + "[data]\nunpaired = true\n",
            "data.unpaired = true needs [adversarial] with cycle = true (CycleGAN)",
        ),
    ],
)
def test_rules_spanning_sections_name_the_keys(cli, write_preset, text: str, message: str) -> None:
    assert message in _check(cli, write_preset, text)


def test_a_preset_cannot_run_a_command_through_a_monai_transform(
    cli, write_preset, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_preset(
        """
extends = "segmentation-2d"
[[data.augment]]
name = "monai"
transform = "LoadImaged"
args = { reader = "os.system", command = "id > owned.txt" }
"""
    )
    result = cli("check", path)
    assert result.code == 2
    assert "'LoadImaged' is not one of the MONAI transforms" in result.err
    assert "args.reader = 'os.system' is not a plain word" in result.err
    assert not (tmp_path / "owned.txt").exists()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("train.steps=true", "train.steps: Input should be a valid integer, got true"),
        ("train.optimizer.lr=true", "train.optimizer.lr: Input should be a valid number, got true"),
        ("data.patch_size=[true, true]", "data.patch_size.0: Input should be a valid integer"),
        ("train.steps='40'", "train.steps: Input should be a valid integer, got '40'"),
        ("predict.overlap=[0.25, true]", "predict.overlap.1: Input should be a valid number"),
        ("predict.tta=[[0], [true]]", "predict.tta.1.0: Input should be a valid integer"),
    ],
)
def test_booleans_and_text_are_not_numbers(cli, write_preset, setting: str, expected: str) -> None:
    path = write_preset('extends = "segmentation-2d"\n')
    result = cli("check", path, "--set", setting)
    assert result.code == 2
    assert expected in result.err
    # The alternatives of a union the value was not written as stay out of the message.
    assert ".float:" not in result.err and "list[" not in result.err


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("model.backbone.channels=[]", "model.backbone.channels: needs at least 2 levels"),
        (
            "model.heads.seg.loss={name='dice', sigmoid=false}",
            "model.heads.seg.loss (loss 'dice'): set exactly one of sigmoid",
        ),
        (
            "data.normalize={name='percentile', lower=50, upper=10}",
            "data.normalize (transform 'percentile'): need 0 <= lower < upper",
        ),
        ("train.optimizer={name='sgd', momentum=0, nesterov=true}", "needs a momentum above 0"),
        ("model.heads.seg.upsample=[2, 2, 2]", "needs one factor per spatial axis (2)"),
    ],
)
def test_check_refuses_what_building_the_component_would(
    cli, write_preset, setting: str, expected: str
) -> None:
    """A preset that check accepts builds: the components' own rules run at check time."""
    path = write_preset('extends = "segmentation-2d"\n')
    result = cli("check", path, "--set", setting)
    assert result.code == 2, result.err
    assert expected in result.err and "Traceback" not in result.err


def test_extends_a_directory_or_a_symlink_loop_is_named(cli, tmp_path: Path) -> None:
    (tmp_path / "folder.toml").mkdir()
    (tmp_path / "a.toml").symlink_to(tmp_path / "b.toml")
    (tmp_path / "b.toml").symlink_to(tmp_path / "a.toml")
    for target, words in (("folder.toml", "is a directory"), ("a.toml", "loop of symbolic links")):
        preset = tmp_path / f"child-{target}"
        preset.write_text(f'extends = "{target}"\n')
        result = cli("check", preset)
        assert result.code == 2, result.err
        assert f"extends = '{target}'" in result.err and words in result.err
    looped = cli("check", tmp_path / "a.toml")
    assert looped.code == 2 and "loop of symbolic links" in looped.err


@pytest.mark.parametrize(
    ("preset", "channels", "expected"),
    [("instance-2d", 3, 5), ("instance-3d", 5, 7)],
)
def test_a_loss_that_asks_for_its_own_target_needs_its_channels(
    cli, write_preset, preset: str, channels: int, expected: int
) -> None:
    text = (
        f'extends = "{preset}"\n[model.heads.seg]\nout_channels = {channels}\n'
        'loss = { name = "embedseg" }\n'
    )
    err = _check(cli, write_preset, text)
    assert f"model.heads.seg: loss 'embedseg' is trained against {expected} channels" in err
    assert f"set out_channels = {expected}" in err


def test_a_head_whose_channels_mean_fixed_things_needs_them(cli, write_preset) -> None:
    text = (
        'extends = "instance-2d"\n[model.heads.seg]\nname = "embedseg"\nout_channels = 2\n'
        'loss = { name = "dice_ce", sigmoid = true }\n'
    )
    err = _check(cli, write_preset, text)
    assert "model.heads.seg: head 'embedseg' has 5 output channels in 2D" in err
    assert "set out_channels = 5" in err
