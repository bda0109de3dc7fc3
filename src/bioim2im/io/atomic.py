"""What commands write, and how.

- Outputs appear complete or not at all: written under a hidden partial name, then renamed
  (:func:`atomic_file`, :func:`publish`).
- No command writes over what it reads: an output that is, contains or lies inside one of the
  command's inputs is refused (:func:`refuse_inputs`), whatever ``--overwrite`` says.
- An existing output file is replaced only with ``--overwrite`` (:func:`check_output_file`).
- One writer per output folder (:func:`output_lock`): a second command writing there is refused,
  naming the process that holds it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

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
    in_the_way = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise UserError(f"{option} {path}: {in_the_way} is a file, not a directory")


def check_output_file(
    path: Path,
    option: str,
    *,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> None:
    """Refuse, before any work, an output file that cannot be written, that is (or is inside)
    one of ``inputs``, or that exists when ``overwrite`` is not given."""
    ensure_writable_file(path, option)
    refuse_inputs(path, inputs, option)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise UserError(
            f"{option} {path} exists; add --overwrite to replace it, or choose another path"
        )


def refuse_inputs(
    output: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str] | None],
    option: str = "--output",
) -> None:
    """Refuse an ``output`` that is, contains or lies inside one of the command's ``inputs``,
    whatever ``--overwrite`` says: no command replaces, deletes or writes into what it reads.

    ``inputs`` are what the command reads: image files and stores (an OME-Zarr), manifests,
    presets, checkpoints, model packages, run directories. A plain folder that merely holds
    input images is not one (an output may go into it, never replace it: the images in it are
    inputs). Symbolic links are resolved (and a hard link to an input is the input); URLs
    (``s3://...``) and ``None`` are skipped."""
    target = _real(output)
    for given in inputs:
        if given is None or "://" in os.fspath(given):
            continue
        source = _real(given)
        if target == source or _same_file(output, given):
            relation = "is"
        elif source in target.parents:
            relation = "is inside"
        elif target in source.parents:
            relation = "contains"
        else:
            continue
        raise UserError(
            f"{option} {os.fspath(output)} {relation} {os.fspath(given)}, which this command "
            "reads; no command writes over its own inputs (even with --overwrite): choose "
            "another path"
        )


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


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


def remove_stale_partials(
    folder: Path, name: str | None = None, tag: str | None = None
) -> list[Path]:
    """Delete the partial files of atomic writes that a killed process left in ``folder``
    (``.NAME.partial-PID`` and ``.NAME.partial-TAG-PID`` of processes that are gone; only those
    of output ``name``, or of ``tag``, when given); returns what was removed."""
    removed = []
    pattern = f".{glob_escape(name) if name else '*'}.partial-{f'{tag}-' if tag else ''}*"
    for candidate in folder.glob(pattern):
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


def glob_escape(name: str) -> str:
    """``name`` matched literally by :meth:`Path.glob`."""
    import glob

    return glob.escape(name)


# ---------------------------------------------------------------------------------------------
# One writer per output folder

LOCK = ".bioim2im.lock"
"""The lock file in an output folder while a command writes there."""


@contextmanager
def output_lock(folder: Path, *, wait: bool = False, option: str = "--output") -> Iterator[None]:
    """Hold the lock of output ``folder`` (created if needed) while the block runs.

    The lock is ``flock`` on the hidden file :data:`LOCK` in the folder, which says who holds it
    (process id, host, start time). Without ``wait``, a folder locked by another process is
    refused at once with a :class:`UserError` naming that process; with ``wait``, the call waits
    for it (short sections shared by cooperating processes, e.g. ``predict --part``). The kernel
    releases the lock of a process that dies, so a killed command never blocks the next one; a
    lock whose holder is gone from this host is taken over too (a filesystem that kept it).
    Folders made for the lock are removed again when nothing else was written in them; the lock
    file is removed on release.
    """
    if sys.platform == "win32":  # pragma: no cover (no flock: no lock)
        yield
        return
    created = _missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    handle = _acquire(path, wait=wait, option=option, folder=folder)
    try:
        if handle is not None:
            _write_holder(handle)
        yield
    finally:
        if handle is not None:
            with contextlib.suppress(OSError):
                path.unlink()  # still held: nobody else can take this file meanwhile
            handle.close()  # releases the lock
        for made in created:  # innermost first; stops at one that holds something
            try:
                made.rmdir()
            except OSError:
                break


def _missing_folders(folder: Path) -> list[Path]:
    missing = []
    for candidate in (folder, *folder.absolute().parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _acquire(path: Path, *, wait: bool, option: str, folder: Path) -> IO[str] | None:
    """The open lock file, locked; None where the filesystem cannot lock."""
    import fcntl

    mode = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
    for _attempt in range(100):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held until released)
        try:
            fcntl.flock(handle, mode)
        except BlockingIOError:
            holder = _holder(path)
            if _gone(holder):
                # Its holder died on this host, yet the lock stayed (a filesystem that keeps
                # locks, a child process that inherited it): take the file over, once it still
                # says so a moment later (not a new holder about to write its name).
                time.sleep(0.5)
                if _holder(path) == holder:
                    _unlink_if_same(path, handle)
                handle.close()
                continue
            handle.close()
            raise UserError(
                f"{option} {folder} is being written by another bioim2im command "
                f"({_describe(holder)}); wait for it to end, or choose another {option}"
            ) from None
        except OSError as exc:
            handle.close()
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return None  # this filesystem has no locks: go on without
            raise
        # The holder before may have removed the file between our open and lock: retry.
        if _same_inode(path, handle):
            return handle
        handle.close()
    raise UserError(f"{option} {folder}: cannot take the lock {path}")  # pragma: no cover


def _same_inode(path: Path, handle: IO[str]) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)


def _write_holder(handle: IO[str]) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(holder) + "\n")
    handle.flush()


def _holder(path: Path) -> dict[str, object]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _gone(holder: dict[str, object]) -> bool:
    """Whether the holder was a process of this host that is no longer there."""
    pid = holder.get("pid")
    return (
        holder.get("host") == socket.gethostname()
        and isinstance(pid, int)
        and pid > 0
        and pid != os.getpid()
        and not _alive(pid)
    )


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "a process that has not said who it is yet"
    return (
        f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"since {holder.get('started', '?')}"
    )


def _unlink_if_same(path: Path, handle: IO[str]) -> None:
    if _same_inode(path, handle):
        with contextlib.suppress(OSError):
            path.unlink()
