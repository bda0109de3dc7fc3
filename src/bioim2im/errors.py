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
