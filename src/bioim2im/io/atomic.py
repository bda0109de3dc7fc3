"""Outputs appear complete or not at all: written under a hidden partial name, then renamed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_path(path: Path, tag: str | None = None) -> Path:
    """The hidden sibling an output is written to before it is complete: ``.NAME.partial[-TAG]``."""
    return path.with_name(f".{path.name}.partial" + (f"-{tag}" if tag else ""))


def remove(path: Path) -> None:
    """Delete a file or a directory tree; nothing to do when it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def publish(partial: Path, path: Path) -> None:
    """Move the complete ``partial`` to ``path``; an existing ``path`` is replaced only now."""
    if path.exists() and (path.is_dir() or partial.is_dir()):
        # A directory cannot be replaced in one rename: move the old one aside first.
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(partial, path)
        remove(old)
    else:
        os.replace(partial, path)
    _fsync_directory(path.parent)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield the partial path to write ``path`` to; publish it on success, delete it on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path, str(os.getpid()))
    try:
        yield partial
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
    """Write a small text file atomically (UTF-8)."""
    with atomic_file(path) as partial:
        partial.write_text(text, encoding="utf-8")
