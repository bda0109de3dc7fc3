"""A model the user names by URL is downloaded with a deadline (issue 28, package URLs): a server
that hangs, trickles, redirects to ``file://`` or answers an error ends the command with one
message (exit 2) within seconds; a good one is downloaded, run, and leaves nothing behind.
``BIOIM2IM_NETWORK_TIMEOUT`` keeps these tests fast."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from hostile_helpers import assert_ok, assert_user_error, invoke
from hostile_models import (
    Handler,
    Server,
    hang,
    redirect,
    send_bytes,
    serving,
    slow_headers,
    trickle,
    zip_folder,
)


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOIM2IM_NETWORK_TIMEOUT", "0.5")


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder bioim2im downloads into, watched by the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="module")
def package_zip(exported_package: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    archive = zip_folder(exported_package, tmp_path_factory.mktemp("zip") / "model.zip")
    return archive.read_bytes()


def predict(model: str, image: Path, out: Path):  # type: ignore[no-untyped-def]
    return invoke("predict", model, "-i", image, "-o", out)


def test_a_package_at_a_url_is_downloaded_run_and_not_kept(
    package_zip: bytes, tmp_path: Path, one_image: Path, scratch: Path
) -> None:
    with serving(send_bytes(package_zip)) as server:
        assert_ok(predict(f"{server.url}/models/model.zip", one_image, tmp_path / "out"))
        assert server.requests == ["/models/model.zip"]
    assert (tmp_path / "out" / "img_000.ome.zarr").is_dir()
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        (hang, "no answer within 0.5 s"),
        (slow_headers, "no answer within 0.5 s"),
        (trickle, "too slow"),
    ],
)
def test_a_server_that_hangs_or_trickles_is_given_up(
    behaviour, says: str, tmp_path: Path, one_image: Path, scratch: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    if behaviour is trickle:
        # Room for the server thread (of this busy process) to send its headers, so that what
        # is tested is the trickle after them.
        monkeypatch.setenv("BIOIM2IM_NETWORK_TIMEOUT", "2")
    with serving(behaviour) as server:
        url = f"{server.url}/model.zip"
        started = time.monotonic()
        result = predict(url, one_image, tmp_path / "out")
        elapsed = time.monotonic() - started
        server.stop.set()
    assert_user_error(result, url, says, "BIOIM2IM_NETWORK_TIMEOUT" if "answer" in says else "")
    assert elapsed < 10
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "out").exists()


def test_a_redirect_to_a_local_file_is_not_followed(
    exported_package: Path, package_zip: bytes, tmp_path: Path, one_image: Path
) -> None:
    local = tmp_path / "local.zip"
    local.write_bytes(package_zip)
    with serving(redirect(local.as_uri())) as server:
        url = f"{server.url}/model.zip"
        result = predict(url, one_image, tmp_path / "out")
    assert_user_error(result, url, local.as_uri(), "http or https only")


def test_errors_and_non_models_at_a_url_end_in_one_message(tmp_path: Path, one_image: Path) -> None:
    def missing(handler: Handler, server: Server) -> None:
        handler.send_error(404)

    with serving(missing) as server:
        url = f"{server.url}/model.zip"
        assert_user_error(predict(url, one_image, tmp_path / "out"), url, "404")
    with serving(send_bytes(b"not a model")) as server:
        url = f"{server.url}/model.zip"
        assert_user_error(predict(url, one_image, tmp_path / "out"), url, "not a model file")
    with serving(redirect("/elsewhere")) as server:  # redirects to itself, forever
        url = f"{server.url}/model.zip"
        assert_user_error(predict(url, one_image, tmp_path / "out"), url, "redirects")


def test_a_bad_timeout_setting_is_refused(
    tmp_path: Path, one_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIOIM2IM_NETWORK_TIMEOUT", "soon")
    result = predict("http://127.0.0.1:9/model.zip", one_image, tmp_path / "out")
    assert_user_error(result, "BIOIM2IM_NETWORK_TIMEOUT", "soon")
