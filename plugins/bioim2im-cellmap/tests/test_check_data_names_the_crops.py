"""`bioim2im check PRESET --data` of a CellMap datasplit names each crop it found, per split,
with its dataset and the classes it annotates (of those the preset asks for)."""

from __future__ import annotations

from pathlib import Path

from stores import PRESETS, datasplit_text


def test_check_data_prints_the_crops_found(cellmap_root: Path, tmp_path: Path, cli):
    datasplit = tmp_path / "datasplit.csv"
    datasplit.write_text(
        datasplit_text(cellmap_root / "data", {1: "train", 2: "train", 4: "validate"})
    )
    result = cli(
        "check",
        PRESETS / "cellmap-3d.toml",
        "--data",
        "--set",
        f"data.path={datasplit}",
        "--set",
        'data.layout.classes=["mito", "er"]',
    )
    assert result.code == 0, result.err
    text = " ".join(result.err.split())  # the report goes to stderr, the preset to stdout
    assert "train (2):" in text and "validate (1):" in text
    assert "jrc_alpha crop1: mito, er" in text and "jrc_alpha crop2: mito" in text
    assert "jrc_beta crop4: mito, er" in text


def test_force_all_classes_that_leaves_no_crop_names_the_missing_classes(
    cellmap_root: Path, tmp_path: Path, cli
):
    datasplit = tmp_path / "datasplit.csv"
    datasplit.write_text(datasplit_text(cellmap_root / "data", {1: "train", 4: "validate"}))
    result = cli(
        "check",
        PRESETS / "cellmap-3d.toml",
        "--data",
        "--set",
        f"data.path={datasplit}",
        "--set",
        'data.layout.classes=["mito", "nuc"]',
        "--set",
        "data.layout.force_all_classes=validate",
    )
    assert result.code == 2, result.err
    text = " ".join(result.err.split())
    assert "force_all_classes = 'validate' leaves no validate crop" in text
    assert "crop4 lacks nuc" in text
