"""Fuzz: preset documents and ``--set`` values (random keys, types, nesting, unicode, huge
values). Every run of ``check`` ends with exit 0, or exit 2 and one message without a
traceback, and changes no file."""

from __future__ import annotations

import string
import sys
import tempfile
from pathlib import Path
from typing import Any

from hostile_helpers import (
    changes,
    ended_cleanly,
    examples,
    invoke,
    read_toml,
    replaced,
    snapshot,
    toml_document,
    toml_value,
)
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

# Words presets are made of, so that random documents often reach deep into validation.
WORDS = [
    "extends",
    "description",
    "data",
    "model",
    "train",
    "predict",
    "logging",
    "adversarial",
    "path",
    "val_path",
    "patch_size",
    "batch_size",
    "augment",
    "normalize",
    "name",
    "backbone",
    "heads",
    "seg",
    "loss",
    "postprocess",
    "metrics",
    "optimizer",
    "scheduler",
    "lr",
    "steps",
    "epochs",
    "roi_size",
    "overlap",
    "channels",
    "strides",
    "features",
    "in_channels",
    "out_channels",
    "task",
    "target",
    "unet",
    "conv",
    "flip",
    "monai",
    "transform",
    "args",
    "percentile",
    "dice_ce",
    "sigmoid",
    "threshold",
    "adamw",
    "cosine",
    "segmentation-2d",
    "instance-3d",
    "cycle",
    "unpaired",
    "axes",
    "voxel_size",
    "tta",
    "freeze",
    "init_from",
    "layout",
    "cache",
    "seed",
    "block_size",
    "format",
    "value",
    "prob",
    "keys",
]
PATH_KEYS = {("data", "path"), ("data", "val_path"), ("data", "cache_dir"), ("train", "init_from")}

keys = st.one_of(st.sampled_from(WORDS), st.text(min_size=0, max_size=12))
huge_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-3, max_value=300),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=30),
    st.datetimes(),
    st.dates(),
    st.times(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=6)


def _check(document: str, *args: str, data: bool = False) -> None:
    """Write ``document`` to a fresh folder, run check on it, judge the run."""
    with tempfile.TemporaryDirectory() as folder:
        preset = Path(folder) / "preset.toml"
        preset.write_text(document, encoding="utf-8", errors="surrogatepass")
        before = snapshot(Path(folder))
        result = invoke("check", *(["--data"] if data else []), preset, *args, cwd=folder)
        assert ended_cleanly(result), f"{document[:2000]!r}\n{args}\n{result}"
        assert changes(before, snapshot(Path(folder))) == []


@hsettings(max_examples=examples(15))
@given(documents)
def test_random_preset_documents(document: dict[str, Any]) -> None:
    _check(toml_document(document))


@hsettings(max_examples=examples(10))
@given(st.text(max_size=400))
def test_random_text_as_a_preset(text: str) -> None:
    _check(text)


def _paths(table: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(table, dict):
        for key, value in table.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(table, list):
        for index, value in enumerate(table):
            found += _paths(value, (*prefix, index))
    return found


@hsettings(max_examples=examples(25))
@given(st.data())
def test_one_random_change_to_a_valid_preset(tiny_preset, nuclei_data: Path, data) -> None:
    """The tiny preset, resolved, with one entry replaced or added: `check --data` ends
    cleanly and leaves the dataset alone."""
    table = _resolved_tiny(tiny_preset)
    path = data.draw(st.sampled_from(_paths(table)), label="where")
    if isinstance(_at(table, path[:-1]), dict) and data.draw(st.booleans(), label="add a key"):
        path = (*path[:-1], data.draw(keys, label="new key"))
    if tuple(path[:2]) in PATH_KEYS:
        # Never point a scan at a large folder of the machine.
        value = data.draw(
            st.one_of(
                scalars.filter(lambda v: not isinstance(v, str)),
                st.sampled_from(["", "nope", "preset.toml", "IM"]),
            )
        )
    else:
        value = data.draw(values, label="value")
    before = snapshot(nuclei_data)
    _check(toml_document(replaced(table, path, value)), data=True)
    assert changes(before, snapshot(nuclei_data)) == []


def _at(table: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        table = table[part]
    return table


_RESOLVED: dict[str, Any] = {}


def _resolved_tiny(tiny_preset) -> dict[str, Any]:
    if "tiny" not in _RESOLVED:
        result = invoke("check", tiny_preset())
        _RESOLVED["tiny"] = read_toml(result.out)
    return _RESOLVED["tiny"]


key_paths = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(".".join),
    st.text(alphabet=string.ascii_letters + "._- =[]{}\"'", max_size=20),
    st.text(max_size=20),
)
raw_values = st.one_of(values.map(toml_value), st.text(max_size=40), huge_ints.map(str))


@hsettings(max_examples=examples(30))
@given(st.lists(st.tuples(key_paths, raw_values), min_size=1, max_size=3))
def test_random_set_overrides(tiny_preset, overrides: list[tuple[str, str]]) -> None:
    preset = tiny_preset()
    args: list[str] = []
    for key, value in overrides:
        args += ["--set", f"{key}={value}"]
    before = snapshot(preset.parent)
    result = invoke("check", preset, *args)
    assert ended_cleanly(result), f"{args}\n{result}"
    assert changes(before, snapshot(preset.parent)) == []


@hsettings(max_examples=examples(10))
@given(st.text(max_size=60))
def test_random_text_as_a_set_argument(tiny_preset, text: str) -> None:
    result = invoke("check", tiny_preset(), "--set", text)
    assert ended_cleanly(result), f"{text!r}\n{result}"


@hsettings(max_examples=examples(6))
@given(st.integers(min_value=60, max_value=1200), st.sampled_from(["[", "{a = ", "a."]))
def test_deep_nesting_is_refused_cleanly(tiny_preset, depth: int, opener: str) -> None:
    if opener == "[":
        text = "x=" + "[" * depth + "]" * depth
    elif opener == "{a = ":
        text = "x=" + "{a=" * depth + "1" + "}" * depth
    else:
        text = "a." * depth + "a=1"
    assert sys.getrecursionlimit() >= 1000
    result = invoke("check", tiny_preset(), "--set", text)
    assert ended_cleanly(result), f"depth {depth}\n{result}"
