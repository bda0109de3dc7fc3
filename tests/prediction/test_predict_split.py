"""A CSV manifest with a split column stands for its test rows, and says so; --split chooses."""

from __future__ import annotations

from pathlib import Path


def _manifest(images: Path) -> Path:
    manifest = images / "data.csv"
    manifest.write_text(
        "IM,split\ncells_0.tif,train\ncells_1.tif,test\ncells_2.tif,Valid\n", encoding="utf-8"
    )
    return manifest


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.ome.zarr"))


def test_a_manifest_with_a_split_predicts_its_test_rows_and_says_so(
    cli, run_2d, images_2d, tmp_path
) -> None:
    manifest = _manifest(images_2d)
    result = cli("predict", run_2d, "-i", manifest, "-o", tmp_path / "test")
    assert result.code == 0, result.err
    assert _outputs(tmp_path / "test") == ["cells_1.ome.zarr"]
    assert "predicting its 1 'test' rows of 3 (column 'split'; --split to choose" in result.err

    assert (
        cli("predict", run_2d, "-i", manifest, "-o", tmp_path / "val", "--split", "val").code == 0
    )
    assert _outputs(tmp_path / "val") == ["cells_2.ome.zarr"]  # "Valid" is val, as in training
    every = cli("predict", run_2d, "-i", manifest, "-o", tmp_path / "all", "--split", "all")
    assert every.code == 0
    assert _outputs(tmp_path / "all") == [f"cells_{i}.ome.zarr" for i in range(3)]


def test_split_mistakes_are_one_message_and_write_nothing(cli, run_2d, images_2d, tmp_path) -> None:
    manifest = _manifest(images_2d)
    out = tmp_path / "out"
    none = cli("predict", run_2d, "-i", manifest, "-o", out, "--split", "holdout")
    assert none.code == 2
    assert "has no 'holdout' rows in its 'split' column (it has: 1 train, 1 test, 1 val)" in (
        none.err
    )
    assert "--split train|test|val|all" in none.err
    not_csv = cli("predict", run_2d, "-i", images_2d, "-o", out, "--split", "test")
    assert not_csv.code == 2
    assert "--split test chooses rows of a CSV manifest" in not_csv.err
    assert not out.exists()
