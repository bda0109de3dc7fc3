"""The bytes of :mod:`bioim2im.builtins._standalone_network`, as packages hold it, and
their sha256: how bioim2im recognises the file in a package without running it."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources


@functools.cache
def text() -> bytes:
    return resources.files("bioim2im.builtins").joinpath("_standalone_network.py").read_bytes()


def sha256() -> str:
    return hashlib.sha256(text()).hexdigest()


EARLIER_SHA256 = frozenset(
    {
        # The first version, before the N2V2 U-Net joined the file.
        "ce22210d29fc4a2c26b0a9f3bc3b1002704db40acca9cb4ff99f79196f74ebac",
    }
)
"""Digests of the file's earlier versions: packages that carry one are bioim2im's too (the file
is never run, only recognised; the network is built from ``config.bioim2im.network``)."""


def is_own(digest: str) -> bool:
    """Whether ``digest`` is the sha256 of this file, now or in an earlier version."""
    return digest == sha256() or digest in EARLIER_SHA256
