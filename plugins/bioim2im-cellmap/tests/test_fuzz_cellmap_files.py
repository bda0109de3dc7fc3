"""Fuzz the CellMap files users hand over: random and malformed test-crop manifests (read by
`pack`, `pack --check` and `predict --crops`) and datasplit CSVs (read by `check --data`, as
`train` reads them). Every run ends with exit 0, or exit 2 and one message without a
traceback, and nothing outside the command's output changes (no name in a file becomes a path
that escapes it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hostile_helpers import changes, ended_cleanly, examples, invoke, snapshot
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from stores import PRESETS

HEADER = ["crop_name", "dataset", "class_label", "voxel_size", "translation", "shape"]
TEXT = st.text(max_size=12)
CROPS = st.sampled_from(["1", "crop1", "2", "", "-1", "1.5", "１", "1/2", "..", "crop", "1_0"])
NAMES = st.sampled_from(
    ["jrc_alpha", "mito", "er", "", "..", "../../escaped", "a/b", "/abs", ".zarray", "x y"]
)
NUMBERS = st.sampled_from(
    ["8", "8.0", "4", "6", "0", "-1", "nan", "inf", "-inf", "1e309", "1e300", "4.5", "", "x"]
)


@st.composite
def number_lists(draw: st.DrawFn) -> str:
    items = draw(st.lists(st.one_of(NUMBERS, st.floats().map(repr)), min_size=0, max_size=5))
    text = ";".join(items)
    return f"[{text}]" if draw(st.booleans()) else text


@st.composite
def manifests(draw: st.DrawFn) -> bytes:
    """A test-crop manifest: mostly well-formed rows with odd values, sometimes any bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    lines = [",".join(HEADER) if draw(st.integers(0, 7)) else draw(TEXT)]
    for _ in range(draw(st.integers(0, 5))):
        # A row that packs (crop1/mito of the predictions), some of its fields replaced.
        fields = ["1", "jrc_alpha", "mito", "[8;8;8]", "[4;4;4]", "[4;6;6]"]
        odd = [
            st.one_of(CROPS, TEXT),
            st.one_of(NAMES, TEXT),
            st.one_of(NAMES, TEXT),
            number_lists(),
            number_lists(),
            number_lists(),
        ]
        for index, strategy in enumerate(odd):
            if draw(st.integers(0, 2)) == 0:
                fields[index] = draw(strategy)
        if draw(st.integers(0, 5)) == 0:
            fields = fields[: draw(st.integers(0, 7))]
        lines.append(",".join(fields))
    if lines[1:] and draw(st.booleans()):
        lines.append(lines[1])  # a duplicate row
    return _encoded(draw, "\n".join(lines) + "\n")


@st.composite
def datasplits(draw: st.DrawFn) -> bytes:
    """A datasplit CSV (no header): usage, raw store and array, crop store and group/[classes]."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    stores = st.sampled_from(["a.zarr", "missing.zarr", "../up.zarr", "", "/abs/x.zarr", "file"])
    groups = st.sampled_from(
        ["crop1/[mito]", "crop1/[mito,er]", "crop1/[../../x]", "crop1/[]", "crop1", "[", "/[a/b]"]
    )
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        fields = [
            draw(st.sampled_from(["train", "validate", "val", "testing", ""])),
            draw(stores),
            draw(st.sampled_from(["raw", "raw/s0", "", "../.."])),
            draw(stores),
            draw(st.one_of(groups, TEXT)),
        ]
        quote = draw(st.booleans())
        lines.append(",".join(f'"{f}"' if quote else f for f in fields))
    return _encoded(draw, "\n".join(lines) + "\n")


def _encoded(draw: st.DrawFn, text: str) -> bytes:
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 9)) == 0:  # a stray byte somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\x00", b"\xff", b"\x80", b"\r"])) + data[at:]
    return data


def _predictions(root: Path) -> None:
    """crop1/mito on the grid of [8;8;8], [4;4;4], [4;6;6], as `predict --crops` writes it."""
    import zarr

    group = zarr.open_group(root / "pred.zarr", mode="w", zarr_format=2)
    array = group.require_group("crop1").create_array(
        "mito", shape=(4, 6, 6), dtype=np.uint8, chunks=(4, 6, 6)
    )
    array[...] = 1
    array.attrs.update(voxel_size=[8.0] * 3, translation=[4.0] * 3)


def _judge(args: list[str | Path], top: Path, outputs: list[Path]) -> None:
    before = snapshot(top)
    result = invoke(*args, cwd=top / "work")
    context = f"{args}\n{result}"
    assert ended_cleanly(result), context
    assert changes(before, snapshot(top), allowed=outputs) == [], context


@hsettings(max_examples=examples(10))
@given(manifests())
def test_random_manifests(manifest: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        top = Path(folder)
        root = top / "work"
        root.mkdir()
        _predictions(root)
        path = root / "test_crop_manifest.csv"
        path.write_bytes(manifest)
        out = root / "out"
        _judge(
            ["cellmap", "pack", root / "pred.zarr", "--crops", path, "-o", out / "s.zip"],
            top,
            [out],
        )
        _judge(["cellmap", "pack", out / "s.zip", "--crops", path, "--check"], top, [])
        raw = f"{root}/{{dataset}}/raw.zarr"
        _judge(
            [
                "cellmap",
                "predict",
                root / "run",
                "--crops",
                path,
                "--raw",
                raw,
                "-o",
                out / "p.zarr",
            ],
            top,
            [out],
        )


@hsettings(max_examples=examples(10))
@given(datasplits())
def test_random_datasplits(datasplit: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        top = Path(folder)
        root = top / "work"
        root.mkdir()
        (root / "file").write_text("a plain file")
        (root / "a.zarr").mkdir()
        path = root / "datasplit.csv"
        path.write_bytes(datasplit)
        preset = PRESETS / "cellmap-3d.toml"
        _judge(["check", preset, "--data", "--set", f"data.path={path}"], top, [])
