"""Hostile model files, built by the tests themselves: TorchScript modules that read, write and
create files (in ``forward``, in a hook, while being loaded), foreign graphs with odd outputs,
and bioimage.io packages edited after export (files outside the package, URLs, bombs).

A package here is a folder exported by bioim2im (``exported_package`` in conftest.py) copied
and edited: :func:`edit_rdf` changes its description, :func:`zip_folder` packs it.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn


# ---- TorchScript that touches files -------------------------------------------------------
class FileToucher(nn.Module):
    """``forward`` maps ``existing`` and ``created`` with ``torch.from_file(shared=True)`` and
    fills their first bytes: the first file is overwritten, the second one created. It returns
    its input (plus 0), so that prediction has something to write."""

    def __init__(self, existing: str, created: str) -> None:
        super().__init__()
        self.existing = existing
        self.created = created

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = torch.from_file(self.existing, shared=True, size=4, dtype=torch.uint8)
        second = torch.from_file(self.created, shared=True, size=4, dtype=torch.uint8)
        touched = first.fill_(88).float().sum() + second.fill_(88).float().sum()
        return x + touched * 0


class LoadToucher(nn.Module):
    """Overwrites ``target`` while it is being loaded: TorchScript runs ``__setstate__`` inside
    ``torch.jit.load``, before anyone calls the module."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target = state[0]
        touched = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8)
        self.training = bool(touched.fill_(88).sum() >= 0) and state[1]


class Identity(nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _touch_in_hook(
    module: Identity, inputs: tuple[torch.Tensor], output: torch.Tensor
) -> torch.Tensor:
    touched = torch.from_file(module.target, shared=True, size=4, dtype=torch.uint8)
    return output + touched.fill_(88).float().sum() * 0


class Looping(nn.Module):
    """A scripted (not traced) network with control flow over tensor operations only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        for _ in range(2):
            y = torch.relu(y) if bool(y.mean() > 0) else torch.sigmoid(y)
        return y


class Printing(nn.Module):
    """Prints from ``forward``: harmless, but not a tensor operation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("hello from the model")
        return x


class Scaler:
    """A TorchScript class (not a module): a custom class the network creates and calls."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class UsesAClass(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Scaler(2.0).scale(x)


def scripted_bytes(module: nn.Module) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def file_toucher(existing: Path, created: Path) -> bytes:
    return scripted_bytes(FileToucher(str(existing), str(created)))


def load_toucher(target: Path) -> bytes:
    return scripted_bytes(LoadToucher(str(target)))


def hook_toucher(target: Path) -> bytes:
    module = Identity(str(target))
    module.register_forward_hook(_touch_in_hook)
    return scripted_bytes(module)


# ---- bioimage.io packages edited after export ----------------------------------------------
def copy_package(exported: Path, where: Path) -> Path:
    return Path(shutil.copytree(exported, where))


def read_rdf(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "rdf.yaml").read_text(encoding="utf-8"))


def write_rdf(folder: Path, rdf: dict[str, Any]) -> None:
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")


def edit_rdf(folder: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    rdf = read_rdf(folder)
    change(rdf)
    write_rdf(folder, rdf)
    return folder


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def only_weights(folder: Path, format: str, data: bytes | None = None) -> Path:
    """The package with only its ``format`` weights (replaced by ``data`` when given)."""
    rdf = read_rdf(folder)
    entry = rdf["weights"][format]
    if data is not None:
        (folder / entry["source"]).write_bytes(data)
        entry["sha256"] = sha256(data)
    entry.pop("parent", None)
    rdf["weights"] = {format: entry}
    write_rdf(folder, rdf)
    return folder


def zip_folder(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """``folder``'s files as a zip package, plus ``extra`` members (names as given, ``..``
    included)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        for path in sorted(folder.iterdir()):
            handle.write(path, path.name)
        for name, data in (extra or {}).items():
            handle.writestr(name, data)
    return archive


# ---- a web server on localhost that records who asked --------------------------------------
Handler = http.server.BaseHTTPRequestHandler


class Server:
    """``behaviour(handler, server)`` answers each request; ``requests`` lists the paths asked
    for; ``stop`` is set when the test is done with it."""

    def __init__(self, behaviour: Callable[[Handler, Server], None]) -> None:
        self.requests: list[str] = []
        server = self

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                with suppress(BrokenPipeError, ConnectionResetError):
                    behaviour(self, server)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        self.httpd.daemon_threads = True
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@contextmanager
def serving(behaviour: Callable[[Handler, Server], None]) -> Iterator[Server]:
    server = Server(behaviour)
    server.thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.httpd.shutdown()
        server.httpd.server_close()


def send_bytes(data: bytes) -> Callable[[Handler, Server], None]:
    def answer(handler: Handler, server: Server) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return answer


def hang(handler: Handler, server: Server) -> None:
    """Accept the request and never answer (until the test is done)."""
    server.stop.wait(60)


def trickle(handler: Handler, server: Server) -> None:
    """Answer a byte every 50 ms, forever (until the test is done)."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(1 << 30))
    handler.end_headers()
    while not server.stop.is_set():
        handler.wfile.write(b"P")
        handler.wfile.flush()
        time.sleep(0.05)


def slow_headers(handler: Handler, server: Server) -> None:
    """Send the status line and then one header byte every 50 ms, forever."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not server.stop.is_set():
        handler.wfile.write(b"a")
        handler.wfile.flush()
        time.sleep(0.05)


def redirect(location: str) -> Callable[[Handler, Server], None]:
    def answer(handler: Handler, server: Server) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer
