"""Outputs appear complete or not at all: written under a hidden partial name, then renamed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bioim2im.errors import UserError


def partial_path(path: Path, tag: str | None = None) -> Path:
    """The hidden sibling an output is written to before it is complete: ``.NAME.partial[-TAG]``."""
    return path.with_name(f".{path.name}.partial" + (f"-{tag}" if tag else ""))


def remove(path: Path) -> None:
    """Delete a file or a directory tree; nothing to do when it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def publish(partial: Path, path: Path, *, replace_directory: bool = False) -> None:
    """Move the complete ``partial`` to ``path``; an existing ``path`` is replaced only now.

    An existing directory at ``path`` is replaced only when the caller says it may be
    (``replace_directory``: an output of its own the user asked to overwrite); otherwise it is
    refused, so publishing never deletes what the command did not create.
    """
    if path.is_dir() and not path.is_symlink():
        if not replace_directory:
            raise UserError(
                f"{path} is a directory; nothing was written there (give the path of a file, "
                "or remove the directory yourself)"
            )
        # A directory cannot be replaced in one rename: move the old one aside first.
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(partial, path)
        remove(old)
    elif path.exists() and partial.is_dir():
        raise UserError(f"{path} is in the way of the folder {partial.name} being published")
    else:
        os.replace(partial, path)
    _fsync_directory(path.parent)


def ensure_writable_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file path that cannot take a file (``option`` names it
    in the message, e.g. ``--json``)."""
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory; give the path of a file to write")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is a file, not a directory")


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield the partial path to write ``path`` to; publish it on success, delete it on failure.

    ``path`` must be a file's: an existing directory there is refused before anything is written.
    """
    if path.is_dir() and not path.is_symlink():
        raise UserError(f"{path} is a directory; nothing was written there (give a file path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path, str(os.getpid()))
    try:
        yield partial
    except OSError as exc:
        remove(partial)
        if exc.errno is not None and exc.filename in (None, str(partial)):
            # A failed write names no file, or the hidden one: name the output instead.
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        remove(partial)
        raise
    publish(partial, path)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (UTF-8); a file that already says ``text`` is left
    untouched (resuming a run rewrites nothing it does not change)."""
    data = text.encode("utf-8")
    try:
        if path.is_file() and path.read_bytes() == data:
            return
    except OSError:
        pass
    with atomic_file(path) as partial:
        partial.write_bytes(data)


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the partial files of atomic writes that a killed process left in ``folder``
    (``.NAME.partial-PID`` of processes that are gone); returns what was removed."""
    removed = []
    for candidate in folder.glob(".*.partial-*"):
        pid = candidate.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            remove(candidate)
            removed.append(candidate)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
