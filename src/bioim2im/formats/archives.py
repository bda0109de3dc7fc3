"""Zip archives from elsewhere (bioimage.io packages, TorchScript files) opened within bounds.

What an archive would unpack to is read from its directory before anything is inflated: more
than :func:`limit_bytes` in all (``BIOIM2IM_MAX_PACKAGE_MB``, default 4096 MiB), or more than
:data:`MAX_RATIO` times its compressed size once it exceeds :data:`RATIO_FLOOR`, is refused
as a zip bomb would be. Python's zipfile then never inflates a member past the size the
directory gives it, so these bounds hold for every read.
"""

from __future__ import annotations

import os
import zipfile

from bioim2im.errors import UserError

LIMIT_VARIABLE = "BIOIM2IM_MAX_PACKAGE_MB"
DEFAULT_LIMIT_MB = 4096
MAX_RATIO = 100
"""Largest ratio of unpacked to packed size (deflate reaches about 1000 on zeros)."""
RATIO_FLOOR = 64 << 20
"""Archives that unpack to less than this (64 MiB) may compress as well as they like."""


def limit_bytes() -> int:
    """The most a model archive may unpack to, in bytes."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_LIMIT_MB << 20
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float(1 << 40):
        raise UserError(
            f"{LIMIT_VARIABLE}={text!r}: give the most a model package may unpack to in MiB, "
            f"a positive number (default {DEFAULT_LIMIT_MB})"
        )
    return int(value * (1 << 20))


def check_zip(archive: zipfile.ZipFile, name: str) -> None:
    """Refuse ``archive`` (called ``name`` in messages) when it would unpack to too much."""
    infos = archive.infolist()
    total = sum(max(0, info.file_size) for info in infos)
    packed = sum(max(0, info.compress_size) for info in infos)
    limit = limit_bytes()
    if total > limit:
        raise UserError(
            f"{name}: refused: it would unpack to {_mib(total)} MiB, more than the "
            f"{_mib(limit)} MiB bioim2im unpacks from a model file ({LIMIT_VARIABLE}=N "
            "raises the limit to N MiB)"
        )
    if total > RATIO_FLOOR and total > MAX_RATIO * max(packed, 1):
        raise UserError(
            f"{name}: refused: it would unpack to {_mib(total)} MiB from {_mib(packed)} MiB "
            f"({total / max(packed, 1):.0f} times); a model file may unpack to at most "
            f"{MAX_RATIO} times its size once it holds more than {_mib(RATIO_FLOOR)} MiB "
            "(a zip bomb?)"
        )


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.3g}"
