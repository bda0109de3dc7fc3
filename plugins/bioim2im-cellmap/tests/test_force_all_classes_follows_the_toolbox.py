"""`data.layout.force_all_classes` does what the toolbox's does: a crop of that split lacking
one of the classes is used in the other split (not dropped; batches are not redrawn); "both"
(the toolbox's true) leaves such crops out; "no" takes the datasplit as it is; a split it empties
is one message naming what each crop lacks. Its default is the toolbox's: "validate" for a
datasplit training creates, an existing datasplit as it is (the toolbox never changes one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from stores import PRESETS, datasplit_text

PRESET = PRESETS / "cellmap-3d.toml"  # classes mito, nuc


def _check(cli, datasplit: Path, *settings: str):
    command = ["check", PRESET, "--data", "--set", f"data.path={datasplit}"]
    for setting in settings:
        command += ["--set", setting]
    return cli(*command)


def _split(cellmap_root: Path, tmp_path: Path, usages: dict[int, str]) -> Path:
    path = tmp_path / "datasplit.csv"
    path.write_text(datasplit_text(cellmap_root / "data", usages))
    return path


@pytest.mark.parametrize(
    ("setting", "train", "validate"),
    [
        # The default: an existing datasplit is used as it is, as the toolbox does.
        ((), ["jrc_alpha crop2"], ["jrc_alpha crop1", "jrc_beta crop4"]),
        # crop4 (mito, er) lacks nuc, so it is trained on instead of validated on.
        (("data.layout.force_all_classes=validate",), ["crop2", "crop4"], ["crop1"]),
        # The toolbox's true: crops lacking a class in any split are left out.
        (("data.layout.force_all_classes=both",), [], ["crop1"]),
        (("data.layout.force_all_classes=true",), [], ["crop1"]),
        # As it is.
        (("data.layout.force_all_classes=no",), ["crop2"], ["crop1", "crop4"]),
        (("data.layout.force_all_classes=false",), ["crop2"], ["crop1", "crop4"]),
    ],
)
def test_crops_lacking_a_class_move_to_the_other_split(
    cellmap_root: Path, tmp_path: Path, cli, setting, train, validate
):
    datasplit = _split(cellmap_root, tmp_path, {1: "validate", 2: "train", 4: "validate"})
    if not train:
        # Nothing left to train on: one message, naming what each crop lacks.
        result = _check(cli, datasplit, *setting)
        assert result.code == 2 and result.err.count("error:") == 1, result.err
        text = " ".join(result.err.split())
        assert "leaves no train crop" in text and "crop2 lacks nuc" in text
        assert "Traceback" not in result.err
        return
    result = _check(cli, datasplit, *setting)
    assert result.code == 0, result.err
    text = " ".join(result.err.split())
    found_train = text.split("train (")[1].split("validate (")[0]
    found_validate = text.split("validate (")[1]
    assert f"train ({len(train)}):" in text and f"validate ({len(validate)}):" in text
    assert all(name in found_train for name in train)
    assert all(name in found_validate for name in validate)


def test_a_validation_that_lacks_a_class_everywhere_is_named(
    cellmap_root: Path, tmp_path: Path, cli
):
    datasplit = _split(cellmap_root, tmp_path, {1: "train", 4: "validate"})
    assert _check(cli, datasplit).code == 0  # as it is, by default
    result = _check(cli, datasplit, "data.layout.force_all_classes=validate")
    assert result.code == 2 and result.err.count("error:") == 1, result.err
    text = " ".join(result.err.split())
    assert "force_all_classes = 'validate' leaves no validate crop" in text
    assert "none annotates all of mito, nuc" in text and "crop4 lacks nuc" in text


def test_a_created_datasplit_follows_the_layouts_setting(cellmap_root: Path, tmp_path: Path, cli):
    search = f"{cellmap_root}/data/{{dataset}}/{{dataset}}.zarr/recon-1/labels/groundtruth/{{crop}}"
    settings = (
        f"data.layout.search_path={search}",
        "data.layout.validation_fraction=0.99",
        'data.layout.classes=["mito", "er"]',
    )
    # Nearly every crop drawn for validation; crop2 (mito only) is trained on by default...
    made = _check(cli, tmp_path / "made.csv", *settings)
    assert made.code == 0, made.err
    # ...and, with force_all_classes = "no", validated on as drawn.
    kept = _check(cli, tmp_path / "kept.csv", *settings, "data.layout.force_all_classes=no")
    assert kept.code == 0, kept.err
    train_made = " ".join(made.err.split()).split("train (")[1].split("validate (")[0]
    train_kept = " ".join(kept.err.split()).split("train (")[1].split("validate (")[0]
    assert "crop2" in train_made and "crop2" not in train_kept
