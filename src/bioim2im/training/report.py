"""What rank 0 tells the user and writes down: metrics.jsonl, progress bar or plain lines."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


class MetricsLog:
    """Appends one JSON object per logged step or validation to ``metrics.jsonl``."""

    def __init__(self, path: Path, forward: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.forward = forward
        """Also given every record (the run's experiment trackers)."""
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    def write(self, record: dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self.forward is not None:
            self.forward(record)

    def close(self) -> None:
        self._file.close()


def trim_metrics(path: Path, after_step: int) -> None:
    """Drop the records of steps after ``after_step`` (a resumed run logs them again)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not _after(line, after_step)]
    if len(kept) != len(lines):
        from bioim2im.io.atomic import write_text

        write_text(path, "".join(f"{line}\n" for line in kept))


def _after(line: str, step: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return True  # the half-written last line of a killed run
    return not isinstance(record, dict) or int(record.get("step", 0)) > step


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


class Progress:
    """A rich progress bar on a terminal; plain periodic lines when not (readable CI logs)."""

    def __init__(
        self, total: int, start: int, mode: str = "auto", stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.total, self.start = total, start
        self.use_bar = mode == "bar" or (mode == "auto" and self.stream.isatty())
        self._last_line = 0.0
        self._bar: Any = None
        if self.use_bar:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, values: dict[str, float]) -> None:
        info = "  ".join(_fmt(k, v) for k, v in values.items())
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
            return
        now = time.monotonic()
        if step == self.total or now - self._last_line >= 5.0:
            self._last_line = now
            print(f"step {step}/{self.total}  {info}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _fmt(key: str, value: float) -> str:
    if key == "lr":
        return f"lr {value:.2e}"
    if key == "samples_per_s":
        return f"{value:.1f} samples/s"
    return f"{key} {value:.4f}"
