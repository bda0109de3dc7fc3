"""Running bioim2im in a napari thread worker: progress and stop requests across threads, and
every failure as one notification with bioim2im's own message (never a traceback dialog)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QObject, Signal

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a callback of bioim2im's to stop a prediction the user cancelled."""


@dataclass
class Outcome:
    """How a job ended: ``ok`` (with its ``value``), ``cancelled`` or ``error`` (``message``)."""

    status: str
    value: Any = None
    message: str = ""


class Relay(QObject):
    """Signals emitted from any thread (bioim2im calls back from its own threads); Qt delivers
    them in the GUI thread."""

    progress = Signal(int, int)
    metrics = Signal(object)


def error_message(exc: BaseException) -> str:
    """What the user is told: bioim2im's message for its errors, the exception otherwise."""
    from bioim2im.api import UserError

    if isinstance(exc, UserError):
        return str(exc)
    log.exception("napari-bioim2im: unexpected failure", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def notify_error(message: str) -> None:
    """One error notification, in napari's notification area."""
    from napari.utils.notifications import show_error

    show_error(message)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


class Job:
    """One worker at a time for a widget: ``start(fn, done)`` runs ``fn(stop_event)`` in a
    thread worker and calls ``done(outcome)`` in the GUI thread; ``stop()`` sets the event."""

    def __init__(self) -> None:
        self.worker: Any = None
        self.stop_event = threading.Event()

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, fn: Callable[[threading.Event], Any], done: Callable[[Outcome], None]) -> Any:
        from napari.qt.threading import create_worker

        self.stop_event = event = threading.Event()

        def guarded() -> Outcome:
            try:
                value = fn(event)
            except Cancelled:
                return Outcome("cancelled")
            except Exception as exc:  # every failure becomes one message
                return Outcome("error", message=error_message(exc))
            return Outcome("cancelled" if value is Cancelled else "ok", value)

        worker = create_worker(guarded, _start_thread=False)

        def finished(outcome: Outcome) -> None:
            self.worker = None
            if outcome.status == "error":
                notify_error(outcome.message)
            done(outcome)

        worker.returned.connect(finished)
        self.worker = worker
        worker.start()
        return worker

    def stop(self) -> None:
        self.stop_event.set()
