"""`bioim2im cellmap datasplit` checks every option and its output path before scanning the stores
(a scan of remote stores takes minutes); a datasplit CSV that is not UTF-8 CSV, or names a class
that is not a name, is one message naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from stores import PRESETS, datasplit_text

PATTERN = "{root}/data/{{dataset}}/{{dataset}}.zarr/recon-1/labels/groundtruth/{{crop}}"
PRESET = PRESETS / "cellmap-3d.toml"


def one_error(result, *mentions: str) -> None:
    assert result.code == 2, result.err
    assert "Traceback" not in result.err, result.err
    assert sum(line.startswith("error:") for line in result.err.splitlines()) == 1, result.err
    for mention in mentions:
        assert mention in result.err, (mention, result.err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-5"], "--seed -5"),
        (["--scale", "nan"], "--scale 'nan'"),
        (["--scale", "8,inf,8"], "--scale '8,inf,8'"),
        (["--classes", "../mito"], "class '../mito'"),
        (["--classes", "mito/s0"], "class 'mito/s0'"),
        (["--datasets", "jrc_alpha/../jrc_beta"], "--datasets 'jrc_alpha/../jrc_beta'"),
        (["--crops", ".."], "--crops '..'"),
    ],
)
def test_bad_options_are_refused_before_the_scan(
    cellmap_root: Path, tmp_path: Path, cli, args, message
):
    output = tmp_path / "datasplit.csv"
    options = ["--classes", "mito,nuc"]
    result = cli(
        "cellmap", "datasplit", PATTERN.format(root=cellmap_root), *options, *args, "-o", output
    )
    one_error(result, message)
    assert not output.exists()


def test_the_output_is_checked_before_the_scan(tmp_path: Path, cli):
    # Stores that do not exist: a scan would end with "no crop under ...".
    pattern = str(tmp_path / "nowhere" / "{dataset}" / "{crop}")
    raw = str(tmp_path / "nowhere" / "{dataset}" / "raw")
    existing = tmp_path / "datasplit.csv"
    existing.write_text("mine\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [
        (existing, "exists; add --overwrite"),
        (folder, "is a directory"),
        (existing / "sub.csv", "is a file, not a directory"),
    ]
    for output, message in cases:
        result = cli(
            "cellmap", "datasplit", pattern, "--classes", "mito", "--raw", raw, "-o", output
        )
        one_error(result, message)
        assert "no crop under" not in result.err
    assert existing.read_text() == "mine\n"
    assert list(folder.iterdir()) == []
    # A dry run writes nothing, so its output path is not in the way.
    dry = cli(
        "cellmap",
        "datasplit",
        pattern,
        "--classes",
        "mito",
        "--raw",
        raw,
        "-o",
        existing,
        "--dry-run",
    )
    one_error(dry, "no crop under")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("ascii then \xe9".encode("latin-1"), "not UTF-8 text: line 1"),
        ('"train","a.zarr","raw","a.zarr","crop1/[mito]"\n'.encode("utf-16"), "not UTF-8 text"),
        (
            b'"train","a.zarr","raw","a.zarr","crop1/[mito]"\n'
            b'"train","a.zarr","raw","a.zarr","crop2/[mito,../../etc]"\n',
            "line 2: class '../../etc'",
        ),
    ],
    ids=["latin-1", "utf-16", "class going up"],
)
def test_a_datasplit_that_is_not_utf8_or_names_odd_classes_is_one_message(
    tmp_path: Path, cli, data: bytes, message: str
):
    datasplit = tmp_path / "datasplit.csv"
    datasplit.write_bytes(data)
    result = cli("check", PRESET, "--data", "--set", f"data.path={datasplit}")
    one_error(result, str(datasplit), message)


def test_a_datasplit_with_a_byte_order_mark_is_read(cellmap_root: Path, tmp_path: Path, cli):
    datasplit = tmp_path / "datasplit.csv"
    text = datasplit_text(cellmap_root / "data", {1: "train", 4: "validate"})
    datasplit.write_bytes(text.encode("utf-8-sig"))
    result = cli(
        "check",
        PRESET,
        "--data",
        "--set",
        f"data.path={datasplit}",
        "--set",
        'data.layout.classes=["mito", "er"]',
    )
    assert result.code == 0, result.err
