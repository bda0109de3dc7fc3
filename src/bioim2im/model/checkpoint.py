"""Checkpoints: plain dicts written atomically and read with ``weights_only=True``."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from bioim2im.errors import UserError

FORMAT = "bioim2im-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary sibling, fsync, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_path(run_or_checkpoint: str | Path, which: str = "best") -> Path:
    """A checkpoint file, given itself or a run directory (``best.pt``, else ``last.pt``)."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        folder = path / "checkpoints"
        for name in (f"{which}.pt", "best.pt", "last.pt"):
            if (folder / name).is_file():
                return folder / name
        raise UserError(
            f"no checkpoint in run directory {path} (expected {folder}/best.pt or last.pt)"
        )
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a bioim2im checkpoint; anything else is refused with a clear message."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path} holds objects that safe (weights-only) loading refuses; bioim2im only loads "
            f"checkpoints made of tensors and plain values ({str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise UserError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): {exc}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a bioim2im checkpoint (no '{FORMAT}' marker)")
    return state
