"""Where an export is written: checked before any work, written under a hidden partial name and
renamed into place only once every check passed, so a failed export leaves nothing behind.

Its work files are next to the output too (``.NAME.partial-scratch-PID``), never in a shared
temporary folder: what an export killed with SIGKILL left there is removed by the next export
to the same path. ``--overwrite`` replaces a file, or a folder that an earlier ``export
--folder`` wrote (it holds :data:`MARKER`); never another folder, nor what the export reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bioim2im.errors import UserError
from bioim2im.io.atomic import partial_path, publish, refuse_inputs, remove, remove_stale_partials

MARKER = ".bioim2im-export"
"""The file in a folder export that says bioim2im wrote it (``--overwrite`` may replace it)."""
SCRATCH = "scratch"
"""The tag of an export's work folder next to its output: ``.NAME.partial-scratch-PID``."""


def check_output(
    path: Path,
    *,
    folder: bool,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
) -> None:
    """Refuse an output that is in the way or cannot be written, or that is, holds or lies
    inside one of the export's ``inputs`` (the run, the checkpoint, the test image), naming it."""
    refuse_inputs(path, inputs)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise UserError(f"--output {path} exists; choose another path or add --overwrite")
        if path.is_dir() != folder:
            kind = "a directory" if path.is_dir() else "a file"
            raise UserError(
                f"--output {path} is {kind}; --overwrite replaces only a {'folder' if folder else 'file'} export"
            )
        if path.is_dir() and not (path / MARKER).is_file():
            raise UserError(
                f"--output {path} is a folder that `bioim2im export --folder` did not write (no "
                f"{MARKER} in it); --overwrite replaces only such a folder: choose another path"
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
    # What a killed export to this path left (its partial output, its work files) goes, and
    # the work files killed exports to other paths left here.
    remove_stale_partials(path.parent, path.name)
    remove_stale_partials(path.parent, tag=SCRATCH)
    partial = partial_path(path, str(os.getpid()))
    remove(partial)
    try:
        yield partial
        if folder:
            (partial / MARKER).write_text("written by bioim2im export\n", encoding="utf-8")
        publish(partial, path, replace_directory=folder)
    except BaseException:
        remove(partial)
        for directory in created:  # the folders this export made, innermost first
            try:
                directory.rmdir()
            except OSError:
                break
        raise


@contextmanager
def scratch(path: Path) -> Iterator[Path]:
    """A work folder next to output ``path`` (``.NAME.partial-scratch-PID``), removed when the
    block ends; one left by a killed export is removed by the next export to ``path``."""
    folder = partial_path(path, f"{SCRATCH}-{os.getpid()}")
    remove(folder)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        remove(folder)
