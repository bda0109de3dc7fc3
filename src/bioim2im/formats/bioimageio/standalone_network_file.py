"""The bytes of :mod:`bioim2im.formats.bioimageio.standalone_network`, as packages hold it, and
their sha256: how bioim2im recognises the file in a package without running it."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources


@functools.cache
def text() -> bytes:
    return (
        resources.files("bioim2im.formats.bioimageio")
        .joinpath("standalone_network.py")
        .read_bytes()
    )


def sha256() -> str:
    return hashlib.sha256(text()).hexdigest()
