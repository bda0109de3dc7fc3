"""`bioim2im cellmap ...`: the CellMap challenge's commands, derived from its API."""

from __future__ import annotations

import typer

from bioim2im.cli.derive import command
from bioim2im_cellmap import api as cellmap

app = typer.Typer(
    help="The CellMap challenge: datasplit, predict the test crops, process, pack, evaluate, view.",
    no_args_is_help=True,
)
app.command("datasplit")(command(cellmap.datasplit))
app.command("predict")(command(cellmap.predict_crops))
app.command("process")(command(cellmap.process))
app.command("pack")(command(cellmap.pack))
app.command("evaluate")(command(cellmap.evaluate, stdout=True))
app.command("view")(command(cellmap.view))
