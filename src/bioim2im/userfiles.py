"""Paths and files a user names (in a preset, on the command line, in a manifest), taken only
when they are what they claim to be.

- :func:`user_path`: a path from text, ``~`` expanded; a NUL character or the home of a user
  who does not exist is a UserError naming where the path came from, not a traceback.
- :func:`read_text`: the text of a *regular* file of bounded size. A FIFO would block the read
  forever, a device such as ``/dev/zero`` or ``/dev/urandom`` never ends, and a huge file would
  fill the memory: each is refused with one message before anything is read.
- :func:`check_regular`: the same refusal for files read by a library (images, checkpoints).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bioim2im.errors import UserError

MAX_PRESET_BYTES = 1 << 20
"""The largest preset file read (1 MiB); real presets are a few kilobytes."""
MAX_TABLE_BYTES = 256 << 20
"""The largest CSV manifest read (256 MiB): millions of rows."""


def user_path(value: str | os.PathLike[str], where: str) -> Path:
    """``value`` as a path with ``~`` expanded, or a UserError naming ``where`` (the key, option
    or manifest line it came from) when no file can have that name."""
    text = os.fspath(value)
    if "\0" in text:
        raise UserError(f"{where}: the path {text!r} holds a NUL character, which no path can")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~name" of a user this machine does not have, or no HOME
        user = text[1:].split("/", 1)[0]
        if not user:
            raise UserError(
                f"{where}: the path {text!r} starts with ~, but the home folder is unknown "
                "(HOME is not set)"
            ) from None
        raise UserError(
            f"{where}: the path {text!r} starts with ~{user}, but there is no user {user!r} "
            "whose home folder it could be"
        ) from None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular(path: str | os.PathLike[str], what: str) -> None:
    """A UserError when ``path`` exists but is not a regular file (symbolic links followed)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return  # missing or unreadable: the reader says so in its own words
    if not stat.S_ISREG(mode):
        raise UserError(
            f"{os.fspath(path)}: {what} must be a regular file, but this is {_kind(mode)}"
        )


def read_bytes(path: str | os.PathLike[str], *, what: str, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (a ``what``: "preset", "CSV manifest", ...).

    A UserError when it is not a regular file or holds more than ``limit`` bytes; an OSError
    (missing file, permission) goes to the caller as it is.
    """
    if "\0" in os.fspath(path):
        raise UserError(f"{os.fspath(path)!r}: the path of a {what} holds a NUL character")
    check_regular(path, what)
    # O_NONBLOCK: should a FIFO take the place of the file between the check and the open, the
    # open returns at once instead of waiting for a writer, and fstat below refuses it.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(
                f"{os.fspath(path)}: {what} must be a regular file, but this is "
                f"{_kind(info.st_mode)}"
            )
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise UserError(
            f"{os.fspath(path)}: {what} is larger than {_size(limit)}, more than any {what} "
            "needs; is it the right file?"
        )
    return b"".join(chunks)


def read_text(
    path: str | os.PathLike[str], *, what: str, limit: int, encoding: str = "utf-8"
) -> str:
    """The text of the regular file ``path``, read as :func:`read_bytes` does; a UserError
    when it is not text in ``encoding``."""
    data = read_bytes(path, what=what, limit=limit)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{os.fspath(path)}: {what} is not {encoding.upper().replace('-SIG', '')} text "
            f"(byte {exc.start}: {exc.reason})"
        ) from None


def _size(limit: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if limit >= 1 << shift:
            return f"{limit / (1 << shift):g} {unit}"
    return f"{limit} bytes"
