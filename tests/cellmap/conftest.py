"""Synthetic CellMap stores, and the same stores served over HTTP and by a local S3 server.

The servers start once per session: a threaded ``http.server`` over the stores' folder, and
moto's S3 server with a public-read bucket holding a copy of them.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from stores import S3, write_cellmap_data

BUCKET = "cellmap-test-data"


@pytest.fixture(scope="session")
def cellmap_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``data/<dataset>/<dataset>.zarr`` for the two synthetic datasets."""
    root = tmp_path_factory.mktemp("cellmap")
    write_cellmap_data(root)
    return root


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def http_root(cellmap_root: Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving ``cellmap_root``."""
    handler = functools.partial(_Quiet, directory=str(cellmap_root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def s3_server(cellmap_root: Path) -> Iterator[S3]:
    """A local S3 server (moto) with a public bucket holding a copy of ``cellmap_root``."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    files = [Path(folder, name) for folder, _, names in os.walk(cellmap_root) for name in names]

    def upload(path: Path) -> None:
        key = path.relative_to(cellmap_root).as_posix()
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), ACL="public-read")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(upload, files))
    yield S3(endpoint, BUCKET)
    server.stop()


@pytest.fixture
def s3(s3_server: S3, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The S3 server, as the environment of a user without credentials points at it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return s3_server
