"""What ``bioim2im predict`` shows: progress over blocks (a rich bar with voxels/s and ETA on
a terminal, plain lines every few seconds otherwise) and the summary table at the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from bioim2im.prediction.job import PredictionSummary

LINE_SECONDS = 5.0


def rate_text(voxels_per_second: float) -> str:
    return f"{voxels_per_second / 1e6:.2f} Mvoxel/s"


class BlockReporter:
    """Reports each image's blocks as they are written; silent when not ``enabled``."""

    def __init__(
        self,
        enabled: bool,
        stream: TextIO | None = None,
        listener: Callable[[int, int], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.listener = listener
        """Also told ``(blocks done, blocks to do)`` of the image being predicted, shown or not;
        what it raises stops the prediction."""
        self._bar: Any = None

    def track(self, name: str) -> Any:
        """The ``report`` argument of :func:`~bioim2im.prediction.image.predict_image` for the
        image ``name``: given the blocks and voxels it will predict, their progress callback."""
        if not self.enabled:
            return None if self.listener is None else (lambda blocks, voxels: self.listener)

        def start(blocks: int, voxels: int) -> _Tracker:
            return _Tracker(self, name, blocks, voxels)

        return start

    def bar(self) -> Any:
        """The rich progress bar, started on first use."""
        if self._bar is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("blocks  {task.fields[rate]}  eta"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._bar.start()
        return self._bar

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _Tracker:
    """The progress callback ``(blocks done, blocks to do)`` of one image (one time point)."""

    def __init__(self, reporter: BlockReporter, name: str, blocks: int, voxels: int) -> None:
        self.reporter, self.name = reporter, name
        self.voxels_per_block = voxels / max(blocks, 1)
        self.started = self.last_line = time.monotonic()
        self.task = None
        if reporter.stream.isatty():
            self.task = reporter.bar().add_task(name, total=blocks, rate="")

    def __call__(self, done: int, total: int) -> None:
        if self.reporter.listener is not None:
            self.reporter.listener(done, total)
        now = time.monotonic()
        elapsed = now - self.started
        speed = self.voxels_per_block * done / elapsed if elapsed > 0 else 0.0
        if self.task is not None:
            self.reporter.bar().update(self.task, completed=done, rate=rate_text(speed))
        elif done == total or now - self.last_line >= LINE_SECONDS:
            self.last_line = now
            eta = (total - done) * self.voxels_per_block / speed if speed > 0 else 0.0
            print(
                f"{self.name}: {done}/{total} blocks, {rate_text(speed)}, eta {eta:.0f} s",
                file=self.reporter.stream,
                flush=True,
            )


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
