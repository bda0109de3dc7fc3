"""What ``bioim2im predict`` tells at the end: per input, its outputs, time and voxels/s
(:class:`InputResult`), and the whole command's (:class:`PredictionSummary`), which renders
itself as a table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.prediction.display import rate_text
from bioim2im.prediction.image import BlockCounts

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult


@dataclass
class InputResult:
    """What became of one input."""

    input: Path
    outputs: list[Path]
    voxels: int
    done_earlier: bool = False
    """Its outputs were finished by an earlier, interrupted run of the same command."""
    seconds: float | None = None
    """None when it was timed only as part of the whole command."""
    blocks: BlockCounts = field(default_factory=BlockCounts)


@dataclass
class PredictionSummary:
    """The outcome of :func:`predict_files`."""

    results: list[InputResult]
    table: Path
    """``predictions.csv``."""
    seconds: float
    quiet: bool = False
    """Nothing to render here: rank 0 of the torchrun workers reports (this process is another
    rank, or the one that launched them)."""
    part: str | None = None
    """``K/N`` when this process predicted one part (``--part``)."""

    @property
    def waiting(self) -> list[InputResult]:
        """Inputs whose outputs wait for other parts (not published yet)."""
        return [r for r in self.results if not all(p.exists() for p in r.outputs)]

    @property
    def voxels(self) -> int:
        """Voxels predicted by this command."""
        return sum(r.voxels for r in self.results if not r.done_earlier)

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / self.seconds if self.seconds > 0 else 0.0

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from summary_renderables(self)


def summary_renderables(summary: PredictionSummary) -> Iterator[Any]:
    """A table of inputs, outputs, time and voxels/s, and the totals."""
    if summary.quiet:
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("input", "outputs", "time", "voxels/s", box=None, header_style="bold")
    for result in summary.results:
        outputs = "\n".join(str(p) for p in result.outputs)
        if result.done_earlier:
            time_text, rate = "done earlier", ""
        elif result.seconds is None:
            time_text, rate = "", ""
        else:
            time_text = f"{result.seconds:.1f} s"
            if result.blocks.resumed:
                time_text += f" (resumed: {result.blocks.resumed}/{result.blocks.total} blocks)"
            rate = rate_text(result.voxels / result.seconds) if result.seconds > 0 else ""
        table.add_row(str(result.input), outputs, time_text, rate)
    yield table
    waiting = summary.waiting
    if summary.part is not None and waiting:
        yield Text(
            f"part {summary.part}: {len(waiting)} image(s) wait for the other parts; the last "
            "part to finish (or `bioim2im predict ... --finalize`) publishes them"
        )
        return
    yield Text(
        f"{len(summary.results)} image(s), {summary.voxels:,} voxels in {summary.seconds:.1f} s "
        f"({rate_text(summary.voxels_per_second)}); table: {summary.table}"
    )
