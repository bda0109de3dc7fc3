"""Where an export is written: checked before any work, written under a hidden partial name and
renamed into place only once every check passed, so a failed export leaves nothing behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bioim2im.errors import UserError
from bioim2im.io.atomic import partial_path, publish, remove


def check_output(path: Path, *, folder: bool, overwrite: bool) -> None:
    """Refuse an output that is in the way or cannot be written, naming it."""
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise UserError(f"--output {path} exists; choose another path or add --overwrite")
        if path.is_dir() != folder:
            kind = "a directory" if path.is_dir() else "a file"
            raise UserError(
                f"--output {path} is {kind}; --overwrite replaces only a {'folder' if folder else 'file'} export"
            )
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"--output {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"--output {path}: {ancestor} is not writable")


@contextmanager
def staged(path: Path, *, folder: bool) -> Iterator[Path]:
    """Yield the hidden partial path to build the output at; publish it when the block ends
    without an error, remove it otherwise."""
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path, str(os.getpid()))
    remove(partial)
    try:
        yield partial
        publish(partial, path, replace_directory=folder)
    except BaseException:
        remove(partial)
        for directory in created:  # the folders this export made, innermost first
            try:
                directory.rmdir()
            except OSError:
                break
        raise
