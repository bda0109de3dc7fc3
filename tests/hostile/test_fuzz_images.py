"""Fuzz: image files (truncated, wrong magic, random bytes, odd dtypes and shapes, NaN and
infinities, broken zarr metadata). `check --data`, `predict` and `evaluate` end with exit 0,
or exit 2 and one message without a traceback, and change nothing outside their outputs."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from hostile_helpers import changes, ended_cleanly, examples, invoke, snapshot
from hypothesis import assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tiny_presets import tiny_unet_toml

DTYPES = [
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
]


def _tiff_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    ndim = draw(st.integers(1, 5))
    side = st.integers(0 if draw(st.booleans()) else 1, 48)
    shape = tuple(draw(st.lists(side, min_size=ndim, max_size=ndim)))
    assume(int(np.prod(shape)) <= 20_000)
    if dtype.kind in "fc":
        elements = st.floats(
            width=16 if dtype == np.float16 else 32, allow_nan=True, allow_infinity=True
        )
    else:
        elements = None
    # Values drawn one by one (NaN, infinities, extremes) for small images; numpy's generator
    # for the others, which hypothesis would draw slowly.
    drawn = elements is not None and int(np.prod(shape)) <= 1024 and draw(st.booleans())
    if not drawn:
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        if dtype.kind == "b":
            return rng.random(shape) > 0.5
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        scale = draw(st.sampled_from([1.0, 1e30, 1e-30]))
        with np.errstate(over="ignore"):  # 1e30 overflows float16 to inf: a hostile value too
            return (rng.random(shape) * scale).astype(dtype)
    assert elements is not None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def image_files(draw: st.DrawFn) -> tuple[str, Any]:
    """(kind, content): bytes of a .tif, or a zarr folder's files."""
    kind = draw(
        st.sampled_from(
            ["tiff", "tiff", "truncated", "wrong magic", "random bytes", "empty", "zarr"]
        )
    )
    if kind == "tiff":
        array = draw(arrays())
        try:
            return kind, _tiff_bytes(array)
        except Exception:
            assume(False)
    if kind in ("truncated", "wrong magic"):
        rng = np.random.default_rng(draw(st.integers(0, 100)))
        good = _tiff_bytes(rng.random((64, 64), dtype=np.float32))
        if kind == "truncated":
            return kind, good[: draw(st.integers(0, len(good) - 1))]
        return kind, draw(st.binary(min_size=4, max_size=4)) + good[4:]
    if kind == "random bytes":
        return kind, draw(st.binary(max_size=3000))
    if kind == "empty":
        return kind, b""
    return kind, draw(zarr_files())


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def zarr_files(draw: st.DrawFn) -> dict[str, bytes]:
    """A zarr v2 array whose metadata is plausible but may be wrong in any field."""
    ndim = draw(st.integers(0, 4))
    dims = st.integers(-1, 200) if draw(st.booleans()) else st.integers(1, 64)
    shape = draw(st.lists(dims, min_size=ndim, max_size=ndim))
    chunks = draw(st.lists(st.integers(-1, 64), min_size=ndim, max_size=ndim))
    meta = {
        "zarr_format": draw(st.sampled_from([2, 2, 2, 3, "2", None])),
        "shape": shape,
        "chunks": chunks,
        "dtype": draw(
            st.sampled_from(
                [
                    "<f4",
                    "|u1",
                    "<i8",
                    "|b1",
                    "<c8",
                    "|O",
                    "<M8[s]",
                    "<U4",
                    "|V8",
                    ">f8",
                    "nope",
                    "hostile_probe.boom",
                ]
            )
        ),
        "compressor": draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {"id": st.sampled_from(["zlib", "blosc", "gzip", "nope", "hostile_probe.boom"])}
                ),
            )
        ),
        "fill_value": draw(json_scalars),
        "order": draw(st.sampled_from(["C", "F", "X"])),
        "filters": draw(st.sampled_from([None, [], [{"id": "pickle"}], [{"id": "nope"}]])),
    }
    if draw(st.booleans()):
        meta[draw(st.sampled_from(list(meta)))] = draw(json_values)
    files = {".zarray": json.dumps(meta).encode()}
    if draw(st.booleans()):
        files[".zattrs"] = json.dumps(
            {"multiscales": draw(st.one_of(json_values, st.just([{"datasets": [{"path": "0"}]}])))}
        ).encode()
    if ndim and draw(st.booleans()):
        files[".".join("0" * ndim)] = draw(st.binary(max_size=512))
    return files


def _write(path: Path, kind: str, content: Any) -> Path:
    """Write a drawn image at ``path`` (suffix .tif, or .zarr for zarr folders)."""
    if kind == "zarr":
        path = path.with_suffix(".zarr")
        path.mkdir(parents=True)
        for name, data in content.items():
            (path / name).write_bytes(data)
        return path
    path.write_bytes(content)
    return path


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@hsettings(max_examples=examples(15))
@given(image_files(), st.sampled_from(["IM", "GT"]))
def test_check_data_with_a_hostile_file(
    nuclei_data: Path, image: tuple[str, Any], role: str
) -> None:
    kind, content = image
    with scratch() as folder:
        data = Path(shutil.copytree(nuclei_data, folder / "data"))
        victim = data / role / "img_003.tif"
        victim.unlink()
        _write(victim, kind, content)  # a zarr image pairs by name: img_003.zarr
        preset = folder / "tiny.toml"
        preset.write_text(tiny_unet_toml(data), encoding="utf-8")
        before = snapshot(folder)
        result = invoke("check", "--data", preset)
        assert ended_cleanly(result), f"{kind} as {role}\n{result}"
        assert changes(before, snapshot(folder)) == []


@hsettings(max_examples=examples(12))
@given(image_files())
def test_predict_a_hostile_file(trained_run: Path, image: tuple[str, Any]) -> None:
    kind, content = image
    with scratch() as folder:
        source = _write(folder / "cells.tif", kind, content)
        out = folder / "out"
        before = snapshot(folder, trained_run)
        result = invoke("predict", trained_run, "-i", source, "-o", out, "--format", "tiff")
        assert ended_cleanly(result), f"{kind}\n{result}"
        assert changes(before, snapshot(folder, trained_run), allowed=[out]) == []


@hsettings(max_examples=examples(12))
@given(
    image_files(),
    st.sampled_from(["pred", "truth"]),
    st.sampled_from(["auto", "semantic", "instance", "regression"]),
)
def test_evaluate_a_hostile_file(
    nuclei_data: Path, image: tuple[str, Any], side: str, task: str
) -> None:
    kind, content = image
    with scratch() as folder:
        good = Path(shutil.copy(nuclei_data / "GT" / "img_000.tif", folder / "good.tif"))
        (folder / "pred").mkdir()
        (folder / "truth").mkdir()
        shutil.copy(good, folder / ("truth" if side == "pred" else "pred") / "img_000.tif")
        _write(folder / side / "img_000.tif", kind, content)
        before = snapshot(folder)
        result = invoke(
            "evaluate",
            "-p",
            folder / "pred",
            "-t",
            folder / "truth",
            "--task",
            task,
            "--json",
            folder / "report.json",
        )
        assert ended_cleanly(result), f"{kind} as {side}, task {task}\n{result}"
        assert changes(before, snapshot(folder), allowed=[folder / "report.json"]) == []
