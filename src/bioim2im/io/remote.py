"""Zarr stores on disk, on S3 or on a web server, opened the same way.

A *location* is a local path or a URL: ``s3://bucket/key.zarr`` or ``https://host/key.zarr``
(``http://`` too). Remote stores are read lazily through fsspec (s3fs, aiohttp), chunk by
chunk, so training or scoring on remote data needs only the chunks it touches.

S3 credentials: anonymous unless AWS credentials are in the environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` or a credentials file named
by ``AWS_SHARED_CREDENTIALS_FILE``), which botocore then reads as usual; ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT_URL_S3``) points at an S3-compatible server. The remote libraries are the
``remote`` extra: ``pip install "bioim2im[remote]"``.

Every request to a remote store must be answered in full within ``BIOIM2IM_REMOTE_TIMEOUT``
seconds (default 60): a server that never answers, or trickles its bytes, is one message
naming it instead of a wait of minutes or forever. Redirects are followed to ``http(s)://``
only (never to ``file://``).
"""

from __future__ import annotations

import asyncio
import math
import os
import posixpath
from collections.abc import AsyncIterator, Awaitable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import zarr
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, WrapperStore

from bioim2im.errors import UserError

REMOTE_SCHEMES = ("s3://", "http://", "https://")
# What fsspec, s3fs, aiohttp and zarr raise for a store that cannot be reached or read.
UNREACHABLE = (OSError, ValueError, KeyError, TimeoutError)
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


TIMEOUT_VARIABLE = "BIOIM2IM_REMOTE_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
_T = TypeVar("_T")


def timeout() -> float:
    """Seconds within which a remote store must answer each request in full:
    ``BIOIM2IM_REMOTE_TIMEOUT``, default 60."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{TIMEOUT_VARIABLE}={text!r}: give a number of seconds above 0, e.g. 60")
    return value


def is_remote(location: str | os.PathLike[str]) -> bool:
    return str(location).startswith(REMOTE_SCHEMES)


def join(location: str | os.PathLike[str], *parts: str) -> str:
    """``location/part/...`` for a path or a URL (URLs keep their ``//``)."""
    text = str(location)
    if is_remote(text):
        return posixpath.join(text.rstrip("/"), *(p.strip("/") for p in parts if p))
    return str(Path(text, *[p for p in parts if p]))


def storage_options(location: str) -> dict[str, Any]:
    """The fsspec options for ``location``: anonymous S3 unless credentials are set; time
    limits on connecting and reading (:func:`timeout`); web redirects to http(s) only."""
    seconds = timeout()
    if location.startswith("s3://"):
        options: dict[str, Any] = {
            "anon": not any(os.environ.get(v) for v in _CREDENTIAL_VARIABLES),
            "config_kwargs": {"connect_timeout": seconds, "read_timeout": seconds},
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["client_kwargs"] = {"endpoint_url": endpoint}
        return options
    if location.startswith(("http://", "https://")):
        import aiohttp

        limit = aiohttp.ClientTimeout(total=seconds, sock_connect=seconds, sock_read=seconds)
        # aiohttp follows redirects to http(s) only: one to file:// is an error, not a read.
        return {"client_kwargs": {"timeout": limit}}
    return {}


class _Deadline(WrapperStore[Store]):
    """A store whose every read must be done within ``seconds``, retries included: the one
    limit that also stops a server trickling its answer a byte at a time."""

    def __init__(self, store: Store, seconds: float) -> None:
        super().__init__(store)
        self.seconds = seconds

    def _with_store(self, store: Store) -> _Deadline:
        return type(self)(store, self.seconds)

    async def _within(self, work: Awaitable[_T]) -> _T:
        return await asyncio.wait_for(work, self.seconds)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        return await self._within(self._store.get(key, prototype, byte_range))

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return await self._within(self._store.get_partial_values(prototype, key_ranges))

    async def exists(self, key: str) -> bool:
        return await self._within(self._store.exists(key))

    async def is_empty(self, prefix: str) -> bool:
        return await self._within(self._store.is_empty(prefix))

    async def _listing(self, names: AsyncIterator[str]) -> AsyncIterator[str]:
        while True:
            try:
                yield await self._within(names.__anext__())
            except StopAsyncIteration:
                return

    def list(self) -> AsyncIterator[str]:
        return self._listing(self._store.list())

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(self._store.list_prefix(prefix))

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(self._store.list_dir(prefix))


def _remote_store(location: str) -> Store:
    store = FsspecStore.from_url(
        location, storage_options=storage_options(location), read_only=True
    )
    return _Deadline(store, timeout())


def _needs_extra(location: str) -> None:
    module = "s3fs" if location.startswith("s3://") else "aiohttp"
    try:
        __import__(module)
    except ImportError:
        raise UserError(
            f"{location}: reading remote stores needs {module}; install the remote extra: "
            'pip install "bioim2im[remote]"'
        ) from None


def open_node(location: str | os.PathLike[str]) -> zarr.Group | zarr.Array:
    """The zarr group or array at ``location`` (read-only), or a UserError saying why not."""
    text = str(location)
    if not is_remote(text):
        if not Path(text).exists():
            raise UserError(f"{text}: no such zarr store or folder")
        try:
            return zarr.open(text, mode="r")
        except UNREACHABLE as exc:
            raise UserError(f"{text}: not a zarr group or array ({exc})") from exc
    _needs_extra(text)
    try:
        return zarr.open(_remote_store(text), mode="r")
    except UserError:
        raise
    except Exception as exc:
        if not is_unreachable(exc):
            raise
        raise UserError(unreachable(text, exc)) from exc


def open_array(location: str | os.PathLike[str]) -> zarr.Array:
    node = open_node(location)
    if not isinstance(node, zarr.Array):
        raise UserError(f"{location}: a zarr group, not an array")
    return node


_REMOTE_LIBRARIES = frozenset({"aiohttp", "aiobotocore", "botocore", "s3fs", "fsspec", "yarl"})


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says a remote store could not be read (what fsspec, s3fs, aiohttp and
    zarr raise for servers that fail, refuse, redirect elsewhere or run out of time)."""
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, UNREACHABLE) or module in _REMOTE_LIBRARIES


def unreachable(location: str, exc: BaseException) -> str:
    """One line on why a remote store could not be read, with what to check."""
    reason = str(exc).strip() or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return (
            f"cannot read {location}: the server did not answer within {timeout():g} s; "
            f"check the address and the network, or set {TIMEOUT_VARIABLE} (seconds) to wait "
            f"longer ({type(exc).__name__})"
        )
    if "redirect" in type(exc).__name__.lower() or "redirect" in reason.lower():
        return (
            f"cannot read {location}: the server redirects it elsewhere, to what is not an "
            f"http(s) address or cannot be followed ({type(exc).__name__}: {reason})"
        )
    if isinstance(exc, FileNotFoundError) or "not found" in reason.lower():
        hint = "check the URL: nothing is there"
    elif isinstance(exc, PermissionError) or "forbidden" in reason.lower():
        hint = (
            "access denied: the store is not public, or the AWS credentials in the environment "
            "do not give access to it"
        )
    else:
        hint = "the server cannot be reached; check the address and the network"
    return f"cannot read {location}: {hint} ({type(exc).__name__}: {reason})"


def glob(pattern: str) -> list[str]:
    """Paths (or URLs) matching a glob pattern, on disk or on S3; sorted."""
    if not is_remote(pattern):
        import glob as local

        return sorted(local.glob(pattern))
    if not pattern.startswith("s3://"):
        raise UserError(
            f"{pattern}: a web server cannot be listed; give the crops' datasplit, or a local "
            "or s3:// search path"
        )
    _needs_extra(pattern)
    import fsspec

    try:
        fs = fsspec.filesystem("s3", **storage_options(pattern))
        # fsspec's own time limit for the whole listing (its retries included).
        found = fs.glob(pattern[len("s3://") :], timeout=timeout())
    except UserError:
        raise
    except Exception as exc:
        if not is_unreachable(exc):
            raise
        raise UserError(unreachable(pattern, exc)) from exc
    return sorted(f"s3://{path}" for path in found)
