"""Errors a user can cause. The CLI prints them as one message and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (preset, file, option), never a bug in bioim2im.

    ``problems`` holds one line per problem when several are reported at once.
    """

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems or [])

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        return "\n".join([self.message, *(f"  - {p}" for p in self.problems)])


class PluginError(UserError):
    """A plugin that cannot be loaded or that clashes with another one."""


class Interrupted(UserError):
    """Stopped by a signal after saving what it could; exits with the conventional 128 +
    signal number (130 for Ctrl-C, 143 for SIGTERM), so that ``train && predict`` stops."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number


class EnvironmentFailure(UserError):
    """The machine refused (disk full, no permission, read-only folder): not the user's input.
    The CLI prints one message and exits with status 1."""

    exit_code = 1


def os_error_cause(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: itself, or what it was raised from or while handling (torch
    reports a failed checkpoint write as a RuntimeError over the OSError)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, OSError):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def describe_os_error(error: OSError, doing: str = "") -> str:
    """One line: what failed, where, and the system's reason."""
    where = error.filename if error.filename is not None else ""
    reason = error.strerror or str(error) or type(error).__name__
    prefix = f"{doing} " if doing else ""
    return (
        f"{prefix}{where}: {reason}" if where else f"{prefix.strip() or 'system error'}: {reason}"
    )


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none: how a library's
    long error is quoted in one message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
