"""Built-in experiment tracker: TensorBoard event files (the ``tensorboard`` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar


def tensorboard(
    *, run_dir: Path, preset: dict[str, Any], start_step: int, log_dir: str = "tensorboard",
    images: bool = True,
) -> Any:  # fmt: skip
    """TensorBoard event files: every logged scalar and the validation snapshots.

    Args:
        log_dir: Folder of the event files, relative to the run directory.
        images: Also write the validation snapshots as images.
    """
    from bioim2im.builtins._loggers import TensorBoardLogger

    return TensorBoardLogger(run_dir / log_dir, start_step=start_step, images=images)


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def _check_tensorboard(*, log_dir: str = "tensorboard", **_: Any) -> None:
    if not tensorboard_installed():
        raise ValueError(
            "needs the tensorboard package: pip install 'bioim2im[tensorboard]' "
            "(or pip install tensorboard)"
        )
    if Path(log_dir).is_absolute() or ".." in Path(log_dir).parts:
        raise ValueError(f"log_dir {log_dir!r} must be a folder inside the run directory")


@hookimpl
def bioim2im_register_loggers(registry: Registrar) -> None:
    registry.add("tensorboard", tensorboard, check=_check_tensorboard)
