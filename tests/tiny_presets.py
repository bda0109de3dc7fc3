"""The tiny U-Net preset the tests train, written once: a 2D U-Net of [8, 16] channels on 32 x 32
patches that trains in well under a second once torch is loaded. A test changes only what it
needs::

    tiny_unet_toml(data)                                   # the preset as TOML text
    tiny_unet_toml(data, {"train.steps": 40, "predict": DROP}, extends="segmentation-3d")

``changes`` maps dotted keys to values (a dict value is a whole table); :data:`DROP` removes a
key or a section, so that the preset ``extends`` gives it. Importable from every test folder
(``tests/`` is on ``sys.path``; the plugins' test folders put it there)."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DROP: Any = object()
"""A ``changes`` value: leave the key (or the whole section) out."""

TINY_UNET: dict[str, Any] = {
    "data": {
        "patch_size": [32, 32],
        "batch_size": 2,
        "num_workers": 0,
        "augment": [],
    },
    "model": {
        "features": 8,
        "backbone": {"name": "unet", "channels": [8, 16], "strides": [2], "num_res_units": 0},
    },
    "train": {
        "steps": 10,
        "log_every": 5,
        "val_every": 10,
        "checkpoint_every": 5,
        "seed": 0,
        "optimizer": {"name": "adamw", "lr": 0.01},
        "scheduler": {"name": "constant"},
    },
    "logging": {"progress": "lines", "snapshots": False},
    "predict": {"roi_size": [32, 32]},
}
"""The preset's own values (over ``extends``); ``data.path`` is given by the test."""

SIGMOID_HEAD: dict[str, Any] = {
    "name": "conv",
    "task": "semantic",
    "loss": {"name": "dice_ce", "sigmoid": True},
    "postprocess": [{"name": "sigmoid"}],
    "metrics": [],
}
"""A head whose saved output is a probability (sigmoid), scored by no metric."""


def tiny_unet(data: str | Path, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The tiny preset's values reading ``data``, with ``changes`` applied."""
    preset = copy.deepcopy(TINY_UNET)
    preset["data"] = {"path": str(data), **preset["data"]}
    for dotted, value in (changes or {}).items():
        *sections, key = dotted.split(".")
        table = preset
        for section in sections:
            table = table.setdefault(section, {})
        if value is DROP:
            table.pop(key, None)
        else:
            table[key] = copy.deepcopy(value)
    return preset


def tiny_unet_toml(
    data: str | Path,
    changes: Mapping[str, Any] | None = None,
    *,
    extends: str = "segmentation-2d",
) -> str:
    """The tiny preset (see the module docstring) as the TOML text of a preset file."""
    return toml_text({"extends": extends, **tiny_unet(data, changes)})


def toml_text(table: Mapping[str, Any]) -> str:
    """``table`` as TOML: its values, then each sub-table under its ``[header]``."""
    return _table(table, []).lstrip("\n")


def _table(table: Mapping[str, Any], path: list[str]) -> str:
    lines = [f"{key} = {_value(v)}" for key, v in table.items() if not isinstance(v, Mapping)]
    if path and lines:  # a table of tables only needs no header of its own
        lines.insert(0, f"\n[{'.'.join(path)}]")
    text = "\n".join(lines) + "\n" if lines else ""
    for key, value in table.items():
        if isinstance(value, Mapping):
            text += _table(value, [*path, key])
    return text


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML value for {value!r}")
