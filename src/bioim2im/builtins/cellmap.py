"""The CellMap challenge's evaluation task and command group."""

from __future__ import annotations

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar


@hookimpl
def bioim2im_register_evaluations(registry: Registrar) -> None:
    registry.add(
        "cellmap",
        "bioim2im.api.cellmap:evaluate",
        "The CellMap challenge's scores: a submission against the truth crops, or one class",
    )


@hookimpl
def bioim2im_register_commands(registry: Registrar) -> None:
    registry.add(
        "cellmap",
        "bioim2im.cli.cellmap:app",
        "The CellMap challenge: datasplit, predict the test crops, pack, evaluate.",
    )
