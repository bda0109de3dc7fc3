"""Zarr stores on disk, on S3 or on a web server, opened the same way.

A *location* is a local path or a URL: ``s3://bucket/key.zarr`` or ``https://host/key.zarr``
(``http://`` too). Remote stores are read lazily through fsspec (s3fs, aiohttp), chunk by
chunk, so training or scoring on the CellMap data needs only the chunks it touches.

S3 credentials: anonymous unless AWS credentials are in the environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` or a credentials file named
by ``AWS_SHARED_CREDENTIALS_FILE``), which botocore then reads as usual; ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT_URL_S3``) points at an S3-compatible server. The remote libraries are the
``cellmap`` extra: ``pip install "bioim2im[cellmap]"``.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

import zarr

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


def is_remote(location: str | os.PathLike[str]) -> bool:
    return str(location).startswith(REMOTE_SCHEMES)


def join(location: str | os.PathLike[str], *parts: str) -> str:
    """``location/part/...`` for a path or a URL (URLs keep their ``//``)."""
    text = str(location)
    if is_remote(text):
        return posixpath.join(text.rstrip("/"), *(p.strip("/") for p in parts if p))
    return str(Path(text, *[p for p in parts if p]))


def storage_options(location: str) -> dict[str, Any]:
    """The fsspec options for ``location``: anonymous S3 unless credentials are set."""
    if location.startswith("s3://"):
        options: dict[str, Any] = {
            "anon": not any(os.environ.get(v) for v in _CREDENTIAL_VARIABLES)
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["client_kwargs"] = {"endpoint_url": endpoint}
        return options
    return {}


def _needs_extra(location: str) -> None:
    module = "s3fs" if location.startswith("s3://") else "aiohttp"
    try:
        __import__(module)
    except ImportError:
        raise UserError(
            f"{location}: reading remote stores needs {module}; install the cellmap extra: "
            'pip install "bioim2im[cellmap]"'
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
        return zarr.open(text, mode="r", storage_options=storage_options(text))
    except UNREACHABLE as exc:
        raise UserError(unreachable(text, exc)) from exc


def open_array(location: str | os.PathLike[str]) -> zarr.Array:
    node = open_node(location)
    if not isinstance(node, zarr.Array):
        raise UserError(f"{location}: a zarr group, not an array")
    return node


def unreachable(location: str, exc: BaseException) -> str:
    """One line on why a remote store could not be read, with what to check."""
    reason = str(exc).strip() or type(exc).__name__
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
        found = fs.glob(pattern[len("s3://") :])
    except UNREACHABLE as exc:
        raise UserError(unreachable(pattern, exc)) from exc
    return sorted(f"s3://{path}" for path in found)
