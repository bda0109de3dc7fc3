"""A model the user names by URL (``bioim2im predict https://host/model.zip``): downloaded into
a temporary folder, read like a file (:mod:`bioim2im.formats.model_files`), and the folder
removed once the model is loaded. Nothing is cached.

This is the only network access a model brings, and only because the user named the URL: a
package never makes bioim2im fetch what it names. The download follows at most
:data:`MAX_REDIRECTS` redirects, to ``http`` and ``https`` URLs only (never ``file://``), holds
at most what a package may unpack to (:func:`bioim2im.formats.archives.limit_bytes`), and gives
up, with one message, on a server that does not answer within ``BIOIM2IM_NETWORK_TIMEOUT``
seconds (default 30) or sends less than :data:`MIN_RATE` bytes a second on average after that.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.errors import UserError, first_line

if TYPE_CHECKING:
    import torch

    from bioim2im.formats.trained_model import TrainedModel

SCHEMES = ("http://", "https://")
TIMEOUT_VARIABLE = "BIOIM2IM_NETWORK_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
MIN_RATE = 16 << 10
"""Bytes per second a download must average once it has run for the timeout."""
MAX_REDIRECTS = 5


def is_url(model: Any) -> bool:
    return isinstance(model, str) and model.lower().startswith(SCHEMES)


def network_timeout() -> float:
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise UserError(
            f"{TIMEOUT_VARIABLE}={text!r}: give the seconds to wait for a server, a positive "
            f"number (default {DEFAULT_TIMEOUT:g})"
        )
    return value


def load_model_url(
    url: str, overrides: Sequence[str], device: str | torch.device, *, trust_model: bool
) -> TrainedModel:
    """The model at ``url`` (a package zip, an ONNX or a TorchScript file)."""
    from bioim2im.formats.model_files import file_kind, load_model_file

    with tempfile.TemporaryDirectory(prefix="bioim2im-model-") as scratch:
        path = download(url, Path(scratch))
        kind = file_kind(path)
        if kind is None or path.suffix.lower() in (".yaml", ".yml"):
            raise UserError(
                f"{url} is not a model file bioim2im reads from a URL (a bioimage.io package "
                "zip, an ONNX or a TorchScript file)"
            )
        try:
            return load_model_file(
                path, overrides, device, trust_model=trust_model, downloaded=True
            )
        except UserError as exc:  # name the URL, not the temporary file
            raise UserError(
                exc.message.replace(str(path), url),
                [p.replace(str(path), url) for p in exc.problems],
            ) from None


class _Watch:
    """Gives up on a download that is too slow: shuts its connection down from a thread of its
    own (a server trickling bytes never trips the socket's own timeout)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.started = time.monotonic()
        self.received = 0
        self.answered = False
        self.expired = False
        self.sock: socket.socket | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="bioim2im-download")
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(min(0.05, self.timeout / 4)):
            elapsed = time.monotonic() - self.started
            if elapsed > self.timeout and self.received < MIN_RATE * elapsed:
                self.expired = True
                if self.sock is not None:
                    with contextlib.suppress(OSError):
                        self.sock.shutdown(socket.SHUT_RDWR)
                return

    def reason(self, url: str) -> str:
        elapsed = time.monotonic() - self.started
        if not self.answered:
            return (
                f"{url}: no answer within {self.timeout:g} s ({TIMEOUT_VARIABLE} sets the "
                "seconds to wait)"
            )
        return (
            f"{url}: the download is too slow ({self.received} bytes in {elapsed:.1f} s, less "
            f"than {MIN_RATE >> 10} KiB/s) and was given up"
        )

    def stop(self) -> None:
        self.done.set()


def download(url: str, folder: Path) -> Path:
    """The file at ``url`` (redirects followed) written into ``folder``."""
    from bioim2im._version import __version__
    from bioim2im.formats.archives import LIMIT_VARIABLE, limit_bytes

    timeout = network_timeout()
    limit = limit_bytes()
    watch = _Watch(timeout)
    current = url
    try:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(current)
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise UserError(
                    f"{url}: leads to {current}; bioim2im downloads a model over http or https only"
                )
            kind = (
                http.client.HTTPSConnection
                if parts.scheme.lower() == "https"
                else http.client.HTTPConnection
            )
            try:
                port = parts.port
            except ValueError:
                raise UserError(f"{url}: leads to {current}, whose port is not valid") from None
            connection = kind(parts.hostname, port, timeout=timeout)
            try:
                connection.connect()
                # The response keeps reading from this socket after the connection lets go of it.
                watch.sock = connection.sock
                target = parts.path or "/"
                target += f"?{parts.query}" if parts.query else ""
                headers = {"User-Agent": f"bioim2im/{__version__}", "Accept-Encoding": "identity"}
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                # Headers cut short by the watch do not count as an answer.
                watch.answered = not watch.expired
                if response.status in (301, 302, 303, 307, 308):
                    location = response.getheader("Location")
                    if not location:
                        raise UserError(f"{url}: the server redirects without saying where")
                    current = urllib.parse.urljoin(current, location)
                    continue
                if response.status != 200:
                    raise UserError(
                        f"{url}: the server answered {response.status} {response.reason}"
                    )
                path = folder / _file_name(current)
                with open(path, "wb") as handle:
                    # read1: whatever has arrived, so a trickle is counted as it comes.
                    while chunk := response.read1(1 << 16):
                        watch.received += len(chunk)
                        if watch.received > limit:
                            raise UserError(
                                f"{url}: refused: it holds more than the {limit >> 20} MiB "
                                f"bioim2im takes for a model ({LIMIT_VARIABLE}=N raises the "
                                "limit to N MiB)"
                            )
                        handle.write(chunk)
                if watch.expired:
                    raise UserError(watch.reason(url))
                return path
            except UserError:
                raise
            except (OSError, http.client.HTTPException) as exc:
                if watch.expired or isinstance(exc, TimeoutError):
                    raise UserError(watch.reason(url)) from None
                raise UserError(
                    f"{url}: the model cannot be downloaded: {first_line(exc)}"
                ) from None
            finally:
                connection.close()
        raise UserError(f"{url}: more than {MAX_REDIRECTS} redirects")
    finally:
        watch.stop()


def _file_name(url: str) -> str:
    """The last segment of the URL's path as a safe file name (``model`` without one)."""
    segment = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]", "_", segment).lstrip(".")[:100]
    return name or "model"
