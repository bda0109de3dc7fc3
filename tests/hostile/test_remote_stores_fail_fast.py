"""Remote stores that never answer, trickle their answer a byte at a time, or redirect to a
local file end in one message naming the store within ``BIOIM2IM_REMOTE_TIMEOUT`` seconds,
over http(s) and S3 alike, instead of waiting for minutes, forever, or reading the file.

The hostile servers run on localhost, started and stopped by each test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hostile_helpers import REMOTE_TIMEOUT, ended_within

from bioim2im.errors import UserError
from bioim2im.io.multiscale import open_levels
from bioim2im.io.remote import open_node

pytest.importorskip("aiohttp")
pytest.importorskip("s3fs")

TIMEOUT = REMOTE_TIMEOUT


@pytest.fixture(autouse=True)
def _short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOIM2IM_REMOTE_TIMEOUT", str(TIMEOUT))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("mode", ["hang", "trickle"])
@pytest.mark.parametrize("opener", [open_node, open_levels])
def test_a_web_store_that_never_answers_in_full(
    hostile_server: Callable[[str], str], mode: str, opener: Callable[[str], Any]
) -> None:
    url = f"{hostile_server(mode)}/cells.zarr"
    error = ended_within(lambda: opener(url))
    assert isinstance(error, UserError), repr(error)
    assert url in str(error) and f"within {TIMEOUT:g} s" in str(error)
    assert "BIOIM2IM_REMOTE_TIMEOUT" in str(error)


def test_a_web_store_redirecting_to_a_local_file(hostile_server: Callable[[str], str]) -> None:
    url = f"{hostile_server('redirect')}/cells.zarr"
    error = ended_within(lambda: open_node(url))
    assert isinstance(error, UserError), repr(error)
    assert url in str(error) and "redirect" in str(error).lower()
    assert "root:" not in str(error)  # nothing of /etc/passwd was read


@pytest.mark.parametrize("mode", ["hang", "trickle"])
def test_an_s3_server_that_never_answers_in_full(
    hostile_server: Callable[[str], str], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", hostile_server(mode))
    url = "s3://bucket/cells.zarr"
    error = ended_within(lambda: open_node(url))
    assert isinstance(error, UserError), repr(error)
    assert url in str(error) and f"within {TIMEOUT:g} s" in str(error)


def test_a_timeout_that_is_not_a_number_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOIM2IM_REMOTE_TIMEOUT", "soon")
    with pytest.raises(UserError, match="BIOIM2IM_REMOTE_TIMEOUT='soon'"):
        open_node("http://127.0.0.1:9/cells.zarr")
