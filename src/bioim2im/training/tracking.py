"""The run's experiment trackers (``logging.loggers``): each is told every logged record, every
validation snapshot, and how the run ended. Rank 0 only.

A tracker that cannot be set up stops the run before training (its factory's UserError). One
that fails later (a server gone away) is reported once and dropped: hours of training are not
thrown away for a dashboard, and ``metrics.jsonl`` in the run directory still has everything.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bioim2im.config import Preset
from bioim2im.plugin.registry import ComponentRegistry


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Tracker:
    """Forwards to the chosen loggers; with none, does nothing."""

    def __init__(
        self, loggers: list[tuple[str, Any]] | None = None, report: Callable[[str], None] = _say
    ) -> None:
        self.loggers = list(loggers or [])
        self.report = report
        self.closed = False

    @classmethod
    def open(
        cls,
        preset: Preset,
        run_dir: Path,
        registry: ComponentRegistry,
        start_step: int,
        report: Callable[[str], None] = _say,
    ) -> Tracker:
        """Build every logger of ``logging.loggers`` (and the ``tensorboard`` shorthand)."""
        data = preset.model_dump(mode="json", exclude_none=True)
        tracker = cls([], report)
        try:
            for spec in preset.logging.chosen_loggers():
                component = registry.get("logger", spec.name)
                logger = component.build(
                    spec.params(), run_dir=run_dir, preset=data, start_step=start_step
                )
                tracker.loggers.append((spec.name, logger))
        except BaseException:
            tracker.close("failed")
            raise
        return tracker

    def metrics(self, record: Mapping[str, Any]) -> None:
        """One record of ``metrics.jsonl``: ``step`` and values; non-finite ones are left out."""
        step = int(record["step"])
        values = {
            k: float(v)
            for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)
        }
        self._each("log_metrics", step, values)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        self._each("log_image", step, name, image)

    def close(self, status: str) -> None:
        """Tell every logger how the run ended (once)."""
        if self.closed:
            return
        self.closed = True
        self._each("close", status)

    def _each(self, method: str, *args: Any) -> None:
        for entry in list(self.loggers):
            name, logger = entry
            try:
                getattr(logger, method)(*args)
            except Exception as exc:
                self.loggers.remove(entry)
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                what = "could not finish" if method == "close" else "failed and is left out"
                self.report(
                    f"logger '{name}' {what} ({type(exc).__name__}: {detail}); "
                    "metrics.jsonl in the run directory has every value"
                )
