"""Fuzz: the OME-Zarr metadata of an input store (``.zattrs`` on zarr v2, ``zarr.json`` on v3),
mutated in its paths, axes, transformations, versions and types. ``predict`` and ``evaluate``
end with exit 0, or exit 2 and one message without a traceback; they change nothing outside
their output; and an exit 0 never read an array outside the store (a sibling store waits there
for a path that escapes)."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from hostile_helpers import changes, ended_cleanly, examples, invoke, snapshot
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

PATHS = [
    "0",
    "0/",
    "1",
    "",
    ".",
    "..",
    "./0",
    "0/../0",
    "../other.ome.zarr/0",
    "../../other.ome.zarr/0",
    "{other}/0",
    "//0",
    "0//",
    "file:///etc/passwd",
    "s3://bucket/0",
    "C:\\0",
    "0\x00",
    "é",
]
NUMBERS = [1.0, 0.5, 2, 0, -1.0, 1e308, 1e-308, math.nan, math.inf, -math.inf, True, "1", None]
VERSIONS = ["0.4", "0.5", "0.3", "0.1", "1.0", "", 0.4, 5, None, ["0.4"]]
JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.sampled_from(NUMBERS),
        st.text(max_size=6),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def _axis(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.sampled_from(["y", "x", "z", "c", "t", "q", ""]))
    if kind == 1:
        return draw(JSON)
    axis: dict[str, Any] = {"name": draw(st.sampled_from(["y", "x", "z", "c", "t", "q", 5, None]))}
    if draw(st.booleans()):
        axis["type"] = draw(st.sampled_from(["space", "channel", "time", "other", 5, None]))
    if draw(st.booleans()):
        axis["unit"] = draw(st.sampled_from(["micrometer", "nanometer", "parsec", 5, None, ["µm"]]))
    return axis


def _values(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(JSON)
    n = draw(st.integers(0, 4))
    return [draw(st.sampled_from(NUMBERS)) if draw(st.booleans()) else 1.0 for _ in range(n)]


def _transforms(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 5)) == 0:
        return draw(JSON)
    found = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["scale", "translation", "identity", "affine", 5, None]))
        transform: dict[str, Any] = {"type": kind}
        if draw(st.integers(0, 4)):
            transform[str(kind)] = _values(draw)
        elif draw(st.booleans()):
            transform["path"] = draw(st.sampled_from(PATHS))
        found.append(transform)
    return found


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """A few changes, each (what, value), applied in order to the multiscales entry."""
    what = st.sampled_from(
        [
            "path",
            "path",
            "axes",
            "axis",
            "dataset transforms",
            "transforms",
            "version",
            "type",
            "datasets",
            "entry",
            "multiscales",
            "extra level",
        ]
    )
    found = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(what)
        if kind == "path":
            value: Any = draw(st.sampled_from(PATHS)) if draw(st.integers(0, 5)) else draw(JSON)
        elif kind == "axes":
            value = (
                [_axis(draw) for _ in range(draw(st.integers(0, 4)))]
                if draw(st.integers(0, 4))
                else draw(JSON)
            )
        elif kind == "axis":
            value = (draw(st.integers(0, 2)), _axis(draw))
        elif kind in ("dataset transforms", "transforms"):
            value = _transforms(draw)
        elif kind == "version":
            value = draw(st.sampled_from(VERSIONS))
        elif kind == "extra level":
            value = {
                "path": draw(st.sampled_from(PATHS)),
                "coordinateTransformations": _transforms(draw),
            }
        else:
            value = draw(JSON)
        found.append((kind, value))
    return found


def _apply(
    entry: dict[str, Any], attrs: dict[str, Any], kind: str, value: Any, other: Path
) -> None:
    if isinstance(value, str):
        value = value.replace("{other}", str(other))
    datasets = entry.get("datasets")
    first = (
        datasets[0]
        if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict)
        else None
    )
    if kind == "path" and first is not None:
        first["path"] = value
    elif kind == "axes":
        entry["axes"] = value
    elif kind == "axis" and isinstance(entry.get("axes"), list) and entry["axes"]:
        entry["axes"][value[0] % len(entry["axes"])] = value[1]
    elif kind == "dataset transforms" and first is not None:
        first["coordinateTransformations"] = value
    elif kind == "transforms":
        entry["coordinateTransformations"] = value
    elif kind == "version":
        attrs.get("ome", entry)["version"] = value
    elif kind == "type":
        entry["type"] = value
    elif kind == "datasets":
        entry["datasets"] = value
    elif kind == "extra level" and isinstance(datasets, list):
        datasets.insert(0, value)
    elif kind == "entry":
        entry.clear()
        if isinstance(value, dict):
            entry.update(value)
    elif kind == "multiscales":
        attrs.get("ome", attrs)["multiscales"] = value


def _inside(store: Path, path: Any) -> bool:
    """Whether ``path`` names something inside ``store`` (judged apart from bioim2im)."""
    if not isinstance(path, str) or not path or "\x00" in path or os.path.isabs(path):
        return False
    joined = os.path.normpath(os.path.join(store, path))
    return joined.startswith(str(store) + os.sep)


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def _stores(folder: Path, nuclei_data: Path, zarr_format: int) -> tuple[Path, Path, Path]:
    """The input store (a nuclei image), a sibling store of sevens, and the truth."""
    from bioim2im.io.omezarr import write_ome_zarr

    image = tifffile.imread(nuclei_data / "IM" / "img_000.tif")
    store = write_ome_zarr(
        folder / "cells.ome.zarr", image, axes="YX", voxel_size=(0.5, 0.5), zarr_format=zarr_format
    )  # type: ignore[arg-type]
    other = write_ome_zarr(
        folder / "other.ome.zarr", np.full_like(image, 7), axes="YX", zarr_format=zarr_format
    )  # type: ignore[arg-type]
    truth = Path(shutil.copy(nuclei_data / "GT" / "img_000.tif", folder / "truth.tif"))
    return store, other, truth


def _mutate(store: Path, other: Path, changes_: list[tuple[str, Any]]) -> Any:
    """Apply the changes to the store's metadata; the first dataset's path afterwards."""
    v2 = (store / ".zattrs").is_file()
    meta = store / (".zattrs" if v2 else "zarr.json")
    document = json.loads(meta.read_text())
    attrs = document if v2 else document["attributes"]
    entry = (attrs if v2 else attrs["ome"])["multiscales"][0]
    for kind, value in changes_:
        _apply(entry, attrs, kind, copy.deepcopy(value), other)
    meta.write_text(json.dumps(document))  # NaN and infinities as JSON's NaN / Infinity
    multiscales = (attrs.get("ome", attrs) if isinstance(attrs, dict) else {}).get("multiscales")
    try:
        return multiscales[0]["datasets"][0]["path"]
    except (TypeError, KeyError, IndexError):
        return None


@hsettings(max_examples=examples(12))
@given(mutations(), st.sampled_from([2, 3]))
def test_predict_a_store_with_hostile_metadata(
    trained_run: Path, nuclei_data: Path, changes_: list[tuple[str, Any]], zarr_format: int
) -> None:
    with scratch() as folder:
        store, other, _ = _stores(folder, nuclei_data, zarr_format)
        path = _mutate(store, other, changes_)
        out = folder / "out"
        before = snapshot(folder, trained_run)
        result = invoke("predict", trained_run, "-i", store, "-o", out, "--format", "tiff")
        assert ended_cleanly(result), f"{changes_}\n{result}"
        assert changes(before, snapshot(folder, trained_run), allowed=[out]) == []
        if result.code == 0:
            assert _inside(store, path), f"read {path!r} outside the store: {changes_}"


@hsettings(max_examples=examples(10))
@given(mutations(), st.sampled_from([2, 3]), st.sampled_from(["pred", "truth"]))
def test_evaluate_a_store_with_hostile_metadata(
    nuclei_data: Path, changes_: list[tuple[str, Any]], zarr_format: int, side: str
) -> None:
    with scratch() as folder:
        store, other, truth = _stores(folder, nuclei_data, zarr_format)
        path = _mutate(store, other, changes_)
        report = folder / "report.json"
        pred, true = (store, truth) if side == "pred" else (truth, store)
        before = snapshot(folder)
        result = invoke("evaluate", "-p", pred, "-t", true, "--json", report)
        assert ended_cleanly(result), f"{changes_}\n{result}"
        assert changes(before, snapshot(folder), allowed=[report]) == []
        if result.code == 0:
            assert _inside(store, path), f"read {path!r} outside the store: {changes_}"
