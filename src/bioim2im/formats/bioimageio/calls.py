"""Calls into bioimageio.spec and bioimageio.core, quietly: reading a package and testing an
export both go through :func:`bioimageio_calls`."""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def bioimageio_calls() -> Iterator[None]:
    """Around calls into bioimageio.spec and bioimageio.core: their logging and warnings kept
    out of the user's way, and the files they leave open closed here. They collect garbage
    after each model they load; the objects alive before are frozen out of the collector's way,
    which makes that milliseconds instead of seconds in a process holding many."""
    from loguru import logger

    logger.disable("bioimageio")
    gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
            gc.collect()
    finally:
        gc.unfreeze()
        logger.enable("bioimageio")
