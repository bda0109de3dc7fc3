"""The plugin's hook implementations (the ``bioim2im`` entry point): the ``cellmap`` data
layout, the ``cellmap-2d``/``cellmap-3d`` presets, the ``cellmap`` evaluation task and the
``bioim2im cellmap`` command group. Light: the workflow's modules are imported when used."""

from __future__ import annotations

from pathlib import Path

from bioim2im.builtins.presets import preset_description
from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar
from bioim2im_cellmap.layout import NAME, cellmap, check_preset

PRESETS = Path(__file__).resolve().parent / "presets"


@hookimpl
def bioim2im_register_layouts(registry: Registrar) -> None:
    registry.add(NAME, cellmap, check_preset=check_preset)


@hookimpl
def bioim2im_register_presets(registry: Registrar) -> None:
    for path in sorted(PRESETS.glob("*.toml")):
        registry.add(path.stem, path, preset_description(path))


@hookimpl
def bioim2im_register_evaluations(registry: Registrar) -> None:
    registry.add(
        "cellmap",
        "bioim2im_cellmap.api:evaluate",
        "The CellMap challenge's scores: a submission against the truth crops, or one class",
    )


@hookimpl
def bioim2im_register_commands(registry: Registrar) -> None:
    registry.add(
        "cellmap",
        "bioim2im_cellmap.cli:app",
        "The CellMap challenge: datasplit, predict the test crops, process, pack, evaluate, view.",
    )
