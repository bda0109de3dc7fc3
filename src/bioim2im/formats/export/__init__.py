"""``bioim2im export``: a trained model in the formats other tools read.

- ``bioimageio``: a bioimage.io model package (zip, or a folder), tested with bioimageio.core
  before it is published (:mod:`bioim2im.formats.bioimageio.export`);
- ``torchscript`` / ``onnx``: the network alone, one graph with one output per head, checked
  against the network (:mod:`bioim2im.formats.graphs.export`).

Every check runs before anything appears at the output path: a failed export leaves nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bioim2im.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

FORMATS = ("bioimageio", "torchscript", "onnx")
SUFFIXES = {"bioimageio": ".zip", "torchscript": ".pt", "onnx": ".onnx"}


@dataclass
class ExportResult:
    path: Path
    format: str
    heads: list[str]
    checks: list[str] = field(default_factory=list)
    """The checks the export passed before it was written."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        for check in self.checks:
            yield Text.from_markup("[green]✓[/] ").append(check)
        yield Text.from_markup("[green]✓[/] ").append(
            f"{self.path} ({self.format}; heads {', '.join(self.heads)})"
        )


def export_model(
    model: str | Path,
    format: str,
    *,
    output: str | Path | None = None,
    heads: Sequence[str] = (),
    folder: bool = False,
    overrides: Sequence[str] = (),
    test_image: str | Path | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export the run directory (its best checkpoint) or checkpoint ``model``; see the module
    docstring. ``output`` defaults to ``<run name><suffix>`` in the current directory."""
    from bioim2im.formats.export.source import open_source
    from bioim2im.formats.export.target import check_output, staged

    if format not in FORMATS:
        raise UserError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if folder and format != "bioimageio":
        raise UserError("--folder applies to --format bioimageio only")
    if test_image is not None and format != "bioimageio":
        raise UserError("--test-image applies to --format bioimageio only")
    # What the export reads: the output is none of it, holds none of it, lies inside none of it.
    inputs: list[str | Path | None] = [model, test_image]
    if output is not None:
        check_output(Path(output), folder=folder, overwrite=overwrite, inputs=inputs)
    source = open_source(model, heads, overrides)
    inputs += [source.run_dir, source.model.checkpoint]
    if output is None:
        suffix = "" if folder else SUFFIXES[format]
        output = Path(f"{source.name}{'-bioimageio' if folder else ''}{suffix}")
    check_output(Path(output), folder=folder, overwrite=overwrite, inputs=inputs)
    path = Path(output)
    with staged(path, folder=folder) as partial:
        if format == "bioimageio":
            from bioim2im.formats.bioimageio.export import export_package

            image = Path(test_image) if test_image is not None else None
            checks = export_package(source, path, folder=folder, image=image, partial=partial)
        else:
            from bioim2im.formats.graphs.export import export_graph

            checks = export_graph(source, format, partial)
    return ExportResult(path, format, source.heads, checks)
