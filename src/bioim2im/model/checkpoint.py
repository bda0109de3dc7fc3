"""Checkpoints: plain dicts written atomically and read with ``weights_only=True``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from bioim2im.errors import EnvironmentFailure, UserError, describe_os_error, os_error_cause
from bioim2im.io.atomic import atomic_file
from bioim2im.userfiles import check_regular

FORMAT = "bioim2im-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write to a hidden partial sibling, fsync, then rename: a reader never sees half a file."""
    try:
        with atomic_file(path) as partial, open(partial, "wb") as handle:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except (OSError, RuntimeError) as exc:
        # torch reports a failed write (disk full) as a RuntimeError over the OSError.
        cause = os_error_cause(exc)
        if cause is None:
            raise
        error = OSError(cause.errno, cause.strerror, str(path))
        raise EnvironmentFailure(describe_os_error(error, "cannot write the checkpoint")) from None


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
    """Read a bioim2im checkpoint; anything else is refused with a clear message (a FIFO or a
    device, which would block or never end, before anything is read)."""
    if not Path(path).is_dir():
        check_regular(path, "checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message suggests loading unsafely; that advice is not passed on.
        raise UserError(
            f"{path} holds objects that safe (weights-only) loading refuses: pickled code or "
            "classes. bioim2im only loads checkpoints made of tensors and plain values"
        ) from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a checkpoint file") from None
    except PermissionError:
        raise  # the machine's refusal: reported as such
    except Exception as exc:  # torch fails in many ways on what is not a checkpoint
        raise UserError(
            f"{path} is not a readable checkpoint (not one, truncated or corrupt?): "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a bioim2im checkpoint (no '{FORMAT}' marker)")
    return state
