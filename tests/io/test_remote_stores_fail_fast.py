"""Remote stores that never answer, trickle their answer a byte at a time, or redirect to a
local file end in one message naming the store within ``BIOIM2IM_REMOTE_TIMEOUT`` seconds,
over http(s) and S3 alike, instead of waiting for minutes, forever, or reading the file.

The hostile servers run on localhost, started and stopped by each test."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bioim2im.errors import UserError
from bioim2im.io.multiscale import open_levels
from bioim2im.io.remote import open_node

pytest.importorskip("aiohttp")
pytest.importorskip("s3fs")

TIMEOUT = 1.0
ENOUGH = 20.0
"""How long a call may take at most: the timeout, the retries and starting the client."""


class _Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "hang"
    stop: threading.Event

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        if self.mode == "hang":
            self.stop.wait(60)  # never answers while the test runs
        elif self.mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not self.stop.wait(0.05):  # a byte every 50 ms: never silent for long
                try:
                    self.wfile.write(b"{")
                    self.wfile.flush()
                except OSError:
                    return
        else:
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = _answer


@pytest.fixture
def hostile_server() -> Iterator[Callable[[str], str]]:
    """``start(mode)``: ``http://127.0.0.1:PORT`` of a server that hangs, trickles or
    redirects to ``file:///etc/passwd``."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Event]] = []

    def start(mode: str) -> str:
        stop = threading.Event()
        handler = type("Handler", (_Hostile,), {"mode": mode, "stop": stop})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.block_on_close = False  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, stop))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, stop in servers:
        stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOIM2IM_REMOTE_TIMEOUT", str(TIMEOUT))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def _ended_within(call: Callable[[], Any], seconds: float = ENOUGH) -> BaseException:
    """What ``call`` raised, asserting it ended within ``seconds`` (in a thread, so that a
    call that never ends fails the test instead of hanging it)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s"
    assert outcome[0] is not None, "ended without an error"
    assert time.monotonic() - started < seconds
    return outcome[0]


@pytest.mark.parametrize("mode", ["hang", "trickle"])
@pytest.mark.parametrize("opener", [open_node, open_levels])
def test_a_web_store_that_never_answers_in_full(
    hostile_server: Callable[[str], str], mode: str, opener: Callable[[str], Any]
) -> None:
    url = f"{hostile_server(mode)}/cells.zarr"
    error = _ended_within(lambda: opener(url))
    assert isinstance(error, UserError), repr(error)
    assert url in str(error) and f"within {TIMEOUT:g} s" in str(error)
    assert "BIOIM2IM_REMOTE_TIMEOUT" in str(error)


def test_a_web_store_redirecting_to_a_local_file(hostile_server: Callable[[str], str]) -> None:
    url = f"{hostile_server('redirect')}/cells.zarr"
    error = _ended_within(lambda: open_node(url))
    assert isinstance(error, UserError), repr(error)
    assert url in str(error) and "redirect" in str(error).lower()
    assert "root:" not in str(error)  # nothing of /etc/passwd was read


@pytest.mark.parametrize("mode", ["hang", "trickle"])
def test_an_s3_server_that_never_answers_in_full(
    hostile_server: Callable[[str], str], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", hostile_server(mode))
    url = "s3://bucket/cells.zarr"
    error = _ended_within(lambda: open_node(url))
    assert isinstance(error, UserError), repr(error)
    assert url in str(error) and f"within {TIMEOUT:g} s" in str(error)


def test_a_timeout_that_is_not_a_number_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOIM2IM_REMOTE_TIMEOUT", "soon")
    with pytest.raises(UserError, match="BIOIM2IM_REMOTE_TIMEOUT='soon'"):
        open_node("http://127.0.0.1:9/cells.zarr")


def test_the_cli_says_one_message(
    hostile_server: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`check --data` of a CellMap datasplit whose stores are on a server that never answers."""
    from bioim2im.cli import main

    url = f"{hostile_server('hang')}/data.zarr"
    split = tmp_path / "datasplit.csv"
    split.write_text(
        f'"train","{url}","recon-1/em/fibsem-uint8","{url}",'
        '"recon-1/labels/groundtruth/crop1/[mito]"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(
        "sys.argv",
        [
            "bioim2im",
            "check",
            "cellmap-3d",
            "--data",
            "--set",
            f"data.path={split}",
            "--set",
            'data.classes=["mito"]',
        ],
    )
    error = _ended_within(main)
    err = capsys.readouterr().err
    assert isinstance(error, SystemExit) and error.code == 2, (repr(error), err)
    assert "Traceback" not in err and err.count("error:") == 1, err
    assert url in err and f"within {TIMEOUT:g} s" in err, err
