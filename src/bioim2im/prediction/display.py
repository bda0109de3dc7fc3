"""What ``bioim2im predict`` shows while it runs: progress over blocks (a rich bar with
voxels/s and ETA on a terminal, plain lines every few seconds otherwise). The summary at the
end renders itself (:mod:`bioim2im.prediction.summary`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

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
