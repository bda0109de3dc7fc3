"""Atomic outputs: complete or absent, and never at the cost of something the writer did not make."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bioim2im.errors import UserError
from bioim2im.io.atomic import atomic_file, publish, write_text


def test_a_file_appears_whole_and_replaces_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_text(target, "old")
    write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_change(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_file(target) as partial:
        partial.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_directory_in_the_way_is_refused_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "prediction.tif").write_text("precious")
    with pytest.raises(UserError, match="is a directory"), atomic_file(folder) as partial:
        partial.write_text("report")
    assert (folder / "prediction.tif").read_text() == "precious"
    partial = tmp_path / ".new"
    partial.write_text("report")
    with pytest.raises(UserError, match="is a directory"):
        publish(partial, folder)
    assert (folder / "prediction.tif").read_text() == "precious"


def test_a_directory_is_replaced_only_when_the_caller_owns_it(tmp_path: Path) -> None:
    old, new = tmp_path / "out.zarr", tmp_path / ".out.zarr.partial"
    old.mkdir()
    (old / "stale").write_text("x")
    new.mkdir()
    (new / "fresh").write_text("y")
    publish(new, old, replace_directory=True)
    assert [p.name for p in old.iterdir()] == ["fresh"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


def test_an_output_is_never_one_of_the_inputs_nor_holds_one_nor_lies_inside_one(
    tmp_path: Path,
) -> None:
    from bioim2im.io.atomic import refuse_inputs

    images = tmp_path / "images"
    store = images / "cells.ome.zarr"
    (store / "0").mkdir(parents=True)
    table = tmp_path / "table.csv"
    table.write_text("path\n")
    (tmp_path / "link.csv").symlink_to(table)
    (tmp_path / "linked").symlink_to(images, target_is_directory=True)
    os.link(table, tmp_path / "hard.csv")
    inputs = [store, table, None, "s3://bucket/data.zarr"]
    for output, relation in [
        (store, "is"),
        (tmp_path / "link.csv", "is"),
        (tmp_path / "hard.csv", "is"),
        (store / "0" / "preds", "is inside"),
        (images, "contains"),
        (tmp_path / "linked", "contains"),
        (tmp_path, "contains"),
    ]:
        with pytest.raises(UserError, match=f"--output {output} {relation} .*reads"):
            refuse_inputs(output, inputs)
    for output in (images / "preds", tmp_path / "other.csv", tmp_path / "bucket"):
        refuse_inputs(output, inputs)  # beside the inputs, or in a folder of them: fine
