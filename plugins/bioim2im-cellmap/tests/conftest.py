"""The plugin's tests: synthetic CellMap stores, the same stores served over HTTP and by a local
S3 server, and bioim2im's own test fixtures.

The servers start once per session: a threaded ``http.server`` over the stores' folder, and
moto's S3 server with a public-read bucket holding a copy of them.

bioim2im's fixtures (``cli``, the hostile-input helpers and their tiny trained run) come from
the repository's ``tests/`` folder: the plugin is tested with the same tools as the core. The
plugin must be installed (``pip install -e plugins/bioim2im-cellmap``): bioim2im finds it
through its entry point, as a user's bioim2im does. Without it these tests are left out, except
in CI (``CI`` set), where that is an error.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]
CORE_TESTS = REPO / "tests"
sys.path.insert(0, str(CORE_TESTS / "hostile"))  # hostile_helpers
sys.path.insert(0, str(CORE_TESTS))  # tiny_presets (which hostile_helpers imports)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.plugin_helpers


def _core_conftest(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_core = _core_conftest(CORE_TESTS / "conftest.py", "bioim2im_tests_conftest")
_hostile = _core_conftest(CORE_TESTS / "hostile" / "conftest.py", "bioim2im_hostile_conftest")
cli = _core.cli
write_preset = _core.write_preset
nuclei_data = _hostile.nuclei_data
trained_run = _hostile.trained_run
hostile_server = _hostile.hostile_server
pytest_collection_modifyitems = _hostile.pytest_collection_modifyitems

from stores import S3, write_cellmap_data  # noqa: E402

from strict_in_ci import importorskip_fails_in_ci  # noqa: E402

importorskip_fails_in_ci()


def _missing() -> str | None:
    """Why these tests cannot run here (None: they can)."""
    from importlib.metadata import entry_points

    if any(ep.value == "bioim2im_cellmap.hooks" for ep in entry_points(group="bioim2im")):
        return None
    return "bioim2im does not find the plugin: pip install -e plugins/bioim2im-cellmap"


MISSING = _missing()
if MISSING is not None:
    if os.environ.get("CI"):  # CI installs the plugin: tests that cannot run there fail
        raise RuntimeError(f"bioim2im-cellmap tests: {MISSING}")
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header(config: pytest.Config) -> str | None:
    return None if MISSING is None else f"bioim2im-cellmap tests left out: {MISSING}"


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
