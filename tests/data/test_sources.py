"""Finding image/target pairs in every layout, and the seeded train/val split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from bioim2im.config import Preset, validate
from bioim2im.data.sources import find_pairs, find_splits, seeded_split
from bioim2im.plugin.manager import get_registry


def tif(path: Path, shape: tuple[int, ...] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.zeros(shape, np.uint8))
    return path


def preset(path: Path | None, heads: dict[str, Any] | None = None, **data: Any) -> Preset:
    heads = heads or {"seg": {"name": "conv", "loss": {"name": "dice_ce", "sigmoid": True}}}
    table = {
        "data": {"path": None if path is None else str(path), "patch_size": [8, 8], **data},
        "model": {"backbone": {"name": "unet"}, "heads": heads},
    }
    return validate(table, get_registry(), "test preset")


def folders(root: Path, names: list[str], roles: tuple[str, ...] = ("IM", "GT")) -> Path:
    for name in names:
        for role in roles:
            tif(root / role / f"{name}.tif")
    return root


def test_folders_layout_matches_by_name_and_attaches_cost_maps(tmp_path: Path) -> None:
    root = folders(tmp_path, ["a", "b", "c"])
    tif(root / "CM" / "b.tif")
    tif(root / "IM" / "d.ome.tif")
    tif(root / "GT" / "d.tif")  # a different suffix still matches by name
    (root / "IM" / "notes.txt").write_text("not an image")
    found = find_pairs(root)
    assert found.layout == "folders" and not found.problems
    pairs = {p.name: p for p in found.pairs[None]}
    assert sorted(pairs) == ["a", "b", "c", "d"]
    assert pairs["a"].targets == {"GT": root / "GT" / "a.tif"} and pairs["a"].cost_map is None
    assert pairs["b"].cost_map == root / "CM" / "b.tif"
    assert pairs["d"].image == root / "IM" / "d.ome.tif"


def test_folders_layout_reports_unmatched_files_and_missing_folders(tmp_path: Path) -> None:
    root = folders(tmp_path / "ds", ["a"])
    tif(root / "IM" / "only_image.tif")
    tif(root / "GT" / "only_label.tif")
    found = find_pairs(root)
    assert [p.name for p in found.pairs[None]] == ["a"]
    assert any("only_image.tif has no matching file in" in p for p in found.problems)
    assert any("only_label.tif has no matching input image" in p for p in found.problems)
    missing = find_pairs(folders(tmp_path / "nogt", ["a"], roles=("IM",)), layout="folders")
    assert missing.problems == [
        f"missing folder {tmp_path / 'nogt' / 'GT'} (layout 'folders' needs IM/ and GT/)"
    ]


def test_one_folder_per_head_target(tmp_path: Path) -> None:
    root = folders(tmp_path, ["a", "b"], roles=("IM", "GT", "FLUO"))
    heads = {
        "seg": {"name": "conv", "loss": {"name": "dice_ce", "sigmoid": True}},
        "fluo": {"name": "conv", "task": "regression", "target": "FLUO", "loss": {"name": "mse"}},
    }
    splits = find_splits(
        preset(root, heads, val_fraction=0.0).data, preset(root, heads).model.heads
    )
    assert not splits.problems
    assert [sorted(p.targets) for p in splits.train] == [["FLUO", "GT"], ["FLUO", "GT"]]


def test_pairs_layout(tmp_path: Path) -> None:
    for name in ("x1", "x2"):
        tif(tmp_path / f"{name}_IM.tif")
        tif(tmp_path / f"{name}_GT.tif")
    tif(tmp_path / "x2_CM.tif")
    tif(tmp_path / "x3_GT.tif")
    found = find_pairs(tmp_path)
    assert found.layout == "pairs"
    pairs = {p.name: p for p in found.pairs[None]}
    assert sorted(pairs) == ["x1", "x2"]
    assert pairs["x2"].cost_map == tmp_path / "x2_CM.tif" and pairs["x1"].cost_map is None
    assert found.problems == [
        f"{tmp_path / 'x3_GT.tif'} has no matching input image x3_IM.* in {tmp_path}"
    ]


def test_csv_with_split_column_and_several_target_columns(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        tif(tmp_path / "img" / f"{name}.tif")
        tif(tmp_path / "lab" / f"{name}.tif")
        tif(tmp_path / "fl" / f"{name}.tif")
    tif(tmp_path / "cm" / "a.tif")
    manifest = tmp_path / "data.csv"
    manifest.write_text(
        "IM,GT,FLUO,CM,split\n"
        "img/a.tif,lab/a.tif,fl/a.tif,cm/a.tif,train\n"
        "img/b.tif,lab/b.tif,fl/b.tif,,valid\n"
        "img/c.tif,lab/c.tif,fl/c.tif,,test\n"
    )
    heads = {
        "seg": {"name": "conv", "loss": {"name": "dice_ce", "sigmoid": True}},
        "fluo": {"name": "conv", "task": "regression", "target": "FLUO", "loss": {"name": "mse"}},
    }
    p = preset(manifest, heads)
    splits = find_splits(p.data, p.model.heads)
    assert splits.layout == "csv" and not splits.problems
    assert [x.name for x in splits.train] == ["img/a.tif"]
    assert splits.train[0].targets == {"GT": tmp_path / "lab/a.tif", "FLUO": tmp_path / "fl/a.tif"}
    assert splits.train[0].cost_map == tmp_path / "cm/a.tif"
    assert [x.name for x in splits.val] == ["img/b.tif"] and splits.val[0].cost_map is None
    assert [x.name for x in splits.test] == ["img/c.tif"]


def test_csv_problems_name_the_file_and_line(tmp_path: Path) -> None:
    tif(tmp_path / "a.tif")
    manifest = tmp_path / "m.csv"
    manifest.write_text("IM,GT,split\na.tif,missing.tif,train\na.tif,a.tif,later\n")
    found = find_pairs(manifest)
    assert (
        f"{manifest} line 2: file not found: {tmp_path / 'missing.tif'} (column 'GT')"
        in found.problems
    )
    assert f"{manifest} line 3: split 'later' is not train, val or test" in found.problems
    no_column = tmp_path / "n.csv"
    no_column.write_text("image,GT\na.tif,a.tif\n")
    assert find_pairs(no_column).problems == [
        f"{no_column} has no column 'IM' (columns: image, GT)"
    ]


def test_csv_folder_with_one_manifest_per_split(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        tif(tmp_path / "files" / f"{name}_im.tif")
        tif(tmp_path / "files" / f"{name}_gt.tif")
    for manifest, name in (("train.csv", "a"), ("valid.csv", "b"), ("test.csv", "c")):
        (tmp_path / manifest).write_text(f"IM,GT\nfiles/{name}_im.tif,files/{name}_gt.tif\n")
    p = preset(tmp_path)
    splits = find_splits(p.data, p.model.heads)
    assert splits.layout == "csv" and not splits.problems
    assert [[x.name for x in s] for s in (splits.train, splits.val, splits.test)] == [
        ["files/a_im.tif"],
        ["files/b_im.tif"],
        ["files/c_im.tif"],
    ]


def test_separate_validation_path(tmp_path: Path) -> None:
    train = folders(tmp_path / "train", ["a", "b", "c"])
    val = folders(tmp_path / "val", ["v"])
    p = preset(train, val_path=str(val))
    splits = find_splits(p.data, p.model.heads)
    assert [x.name for x in splits.train] == ["a", "b", "c"]
    assert [x.name for x in splits.val] == ["v"]


def test_seeded_split_is_reproducible_and_written(tmp_path: Path) -> None:
    root = folders(tmp_path / "ds", [f"img_{i:02d}" for i in range(20)])
    p = preset(root, val_fraction=0.25)
    first = find_splits(p.data, p.model.heads, seed=4, run_dir=tmp_path / "run")
    again = find_splits(p.data, p.model.heads, seed=4)
    other = find_splits(p.data, p.model.heads, seed=5)
    assert len(first.val) == 5 and len(first.train) == 15
    assert [x.name for x in first.val] == [x.name for x in again.val]
    assert [x.name for x in first.val] != [x.name for x in other.val]
    record = json.loads((tmp_path / "run" / "split.json").read_text())
    assert sorted(record["val"]) == sorted(x.name for x in first.val)
    assert record["seed"] == 4 and record["val_fraction"] == 0.25
    assert record["train"]["img_00" if "img_00" in record["train"] else "img_01"] == str(
        root / "IM" / ("img_00.tif" if "img_00" in record["train"] else "img_01.tif")
    )


def test_seeded_split_keeps_one_of_each_for_small_datasets(tmp_path: Path) -> None:
    pairs = find_pairs(folders(tmp_path, ["a", "b"])).pairs[None]
    train, val = seeded_split(pairs, 0.1, seed=0)
    assert len(train) == 1 and len(val) == 1
    assert seeded_split(pairs, 0.0, seed=0) == (sorted(pairs, key=lambda p: p.name), [])


def test_unrecognised_or_missing_paths_are_problems(tmp_path: Path) -> None:
    tif(tmp_path / "random.tif")
    assert "cannot tell how" in find_pairs(tmp_path).problems[0]
    assert find_pairs(tmp_path / "nope").problems == [f"{tmp_path / 'nope'} does not exist"]
    p = preset(None)
    assert "data.path is not set" in find_splits(p.data, p.model.heads).problems[0]


@pytest.mark.parametrize("layout", ["folders", "pairs"])
def test_empty_dataset_is_a_problem(tmp_path: Path, layout: str) -> None:
    if layout == "folders":
        (tmp_path / "IM").mkdir()
        (tmp_path / "GT").mkdir()
    p = preset(tmp_path, layout=layout)
    assert find_splits(p.data, p.model.heads).problems


def test_auto_layout_prefers_folders_and_pairs_over_a_lone_csv(tmp_path: Path) -> None:
    folders(tmp_path / "f", ["a"])
    (tmp_path / "f" / "notes.csv").write_text("not,a,manifest\n")
    assert find_pairs(tmp_path / "f").layout == "folders"
    tif(tmp_path / "m" / "img" / "a.tif")
    (tmp_path / "m" / "list.csv").write_text("IM,GT\nimg/a.tif,img/a.tif\n")
    found = find_pairs(tmp_path / "m")
    assert found.layout == "csv" and [p.name for p in found.pairs[None]] == ["img/a.tif"]
