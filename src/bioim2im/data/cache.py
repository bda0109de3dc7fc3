"""Caches of decoded, normalised arrays, keyed so that a stale entry is never served.

A key hashes every file an array comes from (resolved path, size, modification time in ns) and
every setting that changes its values (normalisation, target preparation, voxel size, ...):
editing a file or a setting simply produces a new key.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bioim2im.io.atomic import partial_path, publish

CacheMode = Literal["none", "memory", "disk"]


def file_fingerprint(path: str | os.PathLike[str]) -> list[Any]:
    """What identifies a file's content cheaply: resolved path, size and mtime in ns.

    A folder (an OME-Zarr store) is fingerprinted by every file inside it.
    """
    path = Path(path).resolve()
    if path.is_dir():
        return [str(path), *(file_fingerprint(p) for p in sorted(path.rglob("*")) if p.is_file())]
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def cache_key(files: Iterable[str | os.PathLike[str]], settings: Mapping[str, Any]) -> str:
    """A hex digest of the files' fingerprints and the settings (JSON-serialisable values)."""
    payload = {"files": [file_fingerprint(f) for f in files], "settings": settings}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ArrayCache:
    """Arrays by key: kept in this process (``memory``), as .npy files (``disk``), or not at all.

    ``memory_limit`` bounds the bytes a memory cache holds; arrays beyond it are made again on
    every request. Disk entries are written atomically (temporary file, then rename), so
    DataLoader workers and DDP ranks may share one cache folder, and are read back as memory
    maps, so only the patches a sample needs are paged in.
    """

    def __init__(
        self,
        mode: CacheMode = "memory",
        directory: Path | None = None,
        *,
        memory_limit: int | None = None,
    ) -> None:
        if mode == "disk" and directory is None:
            raise ValueError("a disk cache needs a directory")
        self.mode = mode
        self.directory = directory
        self.memory_limit = memory_limit if memory_limit is not None else _default_memory_limit()
        self._arrays: dict[str, np.ndarray] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The array under ``key``, calling ``make()`` (and storing its result) on a miss."""
        if self.mode == "none":
            return make()
        if self.mode == "memory":
            with self._lock:
                found = self._arrays.get(key)
            if found is not None:
                return found
            array = make()
            with self._lock:
                if self.has_room(array.nbytes):
                    self._arrays[key] = array
                    self._bytes += array.nbytes
            return array
        return self._from_disk(key, make)

    def has_room(self, nbytes: int) -> bool:
        """Whether a memory cache can still take ``nbytes``."""
        return self._bytes + nbytes <= self.memory_limit

    def __contains__(self, key: str) -> bool:
        if self.mode == "memory":
            return key in self._arrays
        return self.mode == "disk" and self._file(key).is_file()

    def _file(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.npy"

    def _from_disk(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        file = self._file(key)
        if not file.is_file():
            array = np.ascontiguousarray(make())
            file.parent.mkdir(parents=True, exist_ok=True)
            # Per thread too: preloading threads may make the same array (a label file two
            # images share) at once.
            partial = partial_path(file, f"{os.getpid()}-{threading.get_ident()}")
            with partial.open("wb") as handle:
                np.save(handle, array)
            publish(partial, file)
        return np.load(file, mmap_mode="r")

    def __getstate__(self) -> dict[str, Any]:
        # Workers get what was cached before they started (fork shares it; spawn copies it).
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _default_memory_limit() -> int:
    # Half the machine's memory: the rest is for the model, the workers and the system.
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30
