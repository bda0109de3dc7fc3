"""How the C library gives tensors their memory (Linux with glibc).

An eager torch network allocates every activation anew on each batch and frees it after. glibc
serves allocations over 32 MiB (a 3D U-Net's activations, most of them) with a fresh ``mmap``
and gives them back with ``munmap``, so the kernel faults in and zeroes each 4 KiB page again
on every batch: measured on a 2-core machine, 40 % of a CPU prediction's time went to the
kernel (predicting 128 x 1024 x 1024 with segmentation-3d's U-Net: 31.9 million page faults,
76 of 228 CPU seconds). glibc 2.35 and later can back those allocations with 2 MiB transparent
huge pages instead (the ``glibc.malloc.hugetlb=1`` tunable): 512 times fewer faults, the same
memory. The tunable is read when a process starts, so the ``bioim2im`` command starts itself
again with it (:func:`restart_with_huge_pages`, before it imports anything heavy) where the
kernel gives huge pages only to memory that asks (transparent huge pages in ``madvise`` mode,
the common default); with ``always`` every process gets them already, with ``never`` none can.

Dask's workers get the tunable from the process that starts them (:func:`huge_page_environment`)
and have their allocator's thresholds set back from Dask's eager trimming
(:func:`keep_freed_memory`). ``BIOIM2IM_MALLOC=system`` leaves the C library as it is.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "BIOIM2IM_MALLOC"
"""``system``: leave the C library's allocator as it is."""
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_MIN_GLIBC = (2, 35)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20
"""glibc's largest threshold for serving an allocation with mmap on 64-bit machines."""


def opted_out(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the user asked (``BIOIM2IM_MALLOC=system``) to leave the allocator alone."""
    environ = os.environ if environ is None else environ
    return environ.get(OPT_OUT, "").strip().lower() == "system"


def _glibc() -> tuple[int, ...] | None:
    if not sys.platform.startswith("linux"):
        return None
    name, version = platform.libc_ver()
    if name != "glibc":
        return None
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None


def _thp_mode(path: Path = _THP_MODE) -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise``, ``never``)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, stop = text.find("["), text.find("]")
    return text[start + 1 : stop] if 0 <= start < stop else None


def huge_page_environment(
    environ: Mapping[str, str] | None = None, thp_mode: str | None = None
) -> dict[str, str]:
    """The variables to add to ``environ`` (default: this process's) so that a process started
    with it backs large allocations with huge pages; empty when it already does, cannot, or
    the user opted out."""
    environ = os.environ if environ is None else environ
    if opted_out(environ):
        return {}
    version = _glibc()
    if version is None or version < _MIN_GLIBC:
        return {}
    if (thp_mode if thp_mode is not None else _thp_mode()) != "madvise":
        return {}
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(part.split("=")[0] == TUNABLE for part in tunables.split(":") if part):
        return {}
    return {"GLIBC_TUNABLES": ":".join(p for p in (tunables, f"{TUNABLE}=1") if p)}


def restart_with_huge_pages() -> None:
    """Start this command again, as the same process, with the huge-page tunable when it
    lacks it (see the module docstring); otherwise return at once. Call it first thing."""
    wanted = huge_page_environment()
    if not wanted or not getattr(sys, "orig_argv", None):
        return
    environ = {**os.environ, **wanted}
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
    except OSError:
        return  # the interpreter cannot be started again (gone, no permission): carry on


def keep_freed_memory() -> None:
    """Let this process keep freed memory below 32 MiB in its heap for the next allocation,
    as glibc does by itself until a variable like Dask's ``MALLOC_TRIM_THRESHOLD_`` (which its
    nanny sets in every worker) makes it hand every allocation over 128 KiB back at once."""
    if opted_out() or _glibc() is None:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
    except (OSError, AttributeError):
        return
