"""Paths no file can have: a NUL character, the home folder (``~name``) of a user who does not
exist, a name longer than the file system allows, 5,000 folders deep. Given in a preset, with
``--set``, on the command line or in a manifest, each ends in one message and exit 2 (it is
the user's input, not the machine), never a traceback; and a prediction table whose columns
nest thousands deep or lead outside its folder is refused the same way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_helpers import assert_user_error, changes, invoke, snapshot

NUL = "data\x00/images"
NO_USER = "~nosuchuser-bioim2im/data"
DEEP = "a/" * 5000 + "cells.tif"
LONG = "b" * 5000 + ".tif"


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        (f"data.path={NUL}", "NUL"),
        (f"data.val_path={NUL}", "NUL"),
        (f"data.cache_dir={NUL}", "NUL"),
        (f"train.init_from={NUL}", "NUL"),
        (f"data.path={NO_USER}", "nosuchuser-bioim2im"),
        (f"data.cache_dir={NO_USER}", "nosuchuser-bioim2im"),
        (f"train.init_from={NO_USER}", "nosuchuser-bioim2im"),
        ('data.path="a\\u0000b"', "NUL"),
    ],
)
def test_set_paths_that_no_file_can_have(
    tiny_preset: Callable[..., Path], setting: str, named: str
) -> None:
    key = setting.split("=")[0]
    for extra in ([], ["--data"]):
        assert_user_error(invoke("check", tiny_preset(), "--set", setting, *extra), key, named)


def test_preset_paths_that_no_file_can_have(
    tiny_preset: Callable[..., Path], tmp_path: Path
) -> None:
    assert_user_error(invoke("check", "~nosuchuser-bioim2im/tiny.toml"), "nosuchuser-bioim2im")
    child = tmp_path / "child.toml"
    child.write_text(f'extends = "{NO_USER}.toml"\n', encoding="utf-8")
    assert_user_error(invoke("check", child), "extends", "nosuchuser-bioim2im")
    child.write_text('extends = "a\\u0000b.toml"\n', encoding="utf-8")
    assert_user_error(invoke("check", child), "extends", "NUL")
    assert_user_error(invoke("check", tmp_path / (DEEP + ".toml")), "too long")


@pytest.mark.parametrize("path", [NUL, NO_USER + ".tif", DEEP, LONG])
def test_predict_inputs_and_manifest_rows_no_file_can_have(
    trained_run: Path, tmp_path: Path, path: str
) -> None:
    out = tmp_path / "out"
    manifest = tmp_path / "inputs.csv"
    manifest.write_text(f"path\n{path}\n", encoding="utf-8")
    before = snapshot(tmp_path, trained_run)
    for given in (path, manifest):
        assert_user_error(invoke("predict", trained_run, "-i", given, "-o", out))
    assert changes(before, snapshot(tmp_path, trained_run)) == []


@pytest.mark.parametrize("path", [NUL, NO_USER + ".tif", DEEP, LONG])
def test_training_manifest_rows_no_file_can_have(
    tiny_preset: Callable[..., Path], nuclei_data: Path, tmp_path: Path, path: str
) -> None:
    manifest = tmp_path / "train.csv"
    good = nuclei_data / "IM" / "img_000.tif"
    truth = nuclei_data / "GT" / "img_000.tif"
    manifest.write_text(f"IM,GT\n{good},{truth}\n{path},{truth}\n", encoding="utf-8")
    result = invoke("check", "--data", tiny_preset(data=manifest))
    assert_user_error(result, "line 3")


@pytest.mark.parametrize("where", ["output", "--json"])
def test_outputs_no_file_can_have(
    trained_run: Path, nuclei_data: Path, tmp_path: Path, where: str
) -> None:
    image = nuclei_data / "IM" / "img_000.tif"
    if where == "output":
        result = invoke("predict", trained_run, "-i", image, "-o", tmp_path / DEEP)
    else:
        result = invoke("evaluate", "-p", image, "-t", image, "--json", tmp_path / DEEP)
    assert_user_error(result, "too long")


TABLE_HEADER = "input,head,output,axes,shape,dtype,postprocess,made_by\n"


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ('cells,seg,cells.ome.zarr/seg,YX,,,"' + "[" * 5000 + "]" * 5000 + '",\n', "postprocess"),
        (f"cells,seg,{DEEP},YX,,,[],\n", "too long"),
        ("cells,seg,../../elsewhere.ome.zarr/seg,YX,,,[],\n", "outside"),
        ("cells,seg,/etc/passwd,YX,,,[],\n", "outside"),
    ],
)
def test_a_prediction_table_nested_deep_or_leading_elsewhere(
    trained_run: Path, tmp_path: Path, row: str, named: str
) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "predictions.csv").write_text(TABLE_HEADER + row, encoding="utf-8")
    result = invoke("postprocess", trained_run, "-i", saved, "-o", tmp_path / "out")
    assert_user_error(result, named)
    assert not (tmp_path / "out").exists()
