"""Hostile input (issue 11): fixtures, hypothesis profiles and the `fuzz_slow` switch.

Hypothesis profiles, chosen by ``BIOIM2IM_FUZZ``:

- ``ci`` (default): few, derandomized examples so that this folder stays within CI's time;
- ``thorough`` (``nox -s fuzz``): many random examples, and the tests marked ``fuzz_slow``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hostile_helpers import THOROUGH, assert_ok, hostile_servers, invoke
from hypothesis import HealthCheck, settings

from tiny_presets import tiny_unet_toml

_QUIET = [
    HealthCheck.too_slow,
    HealthCheck.function_scoped_fixture,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
]
settings.register_profile(
    "ci",
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "thorough", max_examples=200, deadline=None, print_blob=True, suppress_health_check=_QUIET
)
settings.load_profile("thorough" if THOROUGH else "ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if THOROUGH:
        return
    skip = pytest.mark.skip(reason="long fuzz variant: BIOIM2IM_FUZZ=thorough (nox -s fuzz)")
    for item in items:
        if "fuzz_slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def nuclei_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 64 x 64 nuclei images (IM/) with masks (GT/): five train, one validate."""
    from bioim2im.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("nuclei")
    write_dataset(root, kind="nuclei", n_images=6, shape=(64, 64), seed=0, label_kind="semantic")
    return root


@pytest.fixture
def data_copy(tmp_path: Path, nuclei_data: Path) -> Path:
    """A copy of the nuclei data that a test may damage."""
    return Path(shutil.copytree(nuclei_data, tmp_path / "data"))


@pytest.fixture
def tiny_preset(tmp_path: Path, nuclei_data: Path) -> Callable[..., Path]:
    """``tiny_preset(extra="", data=None, name="tiny.toml")``: a preset that trains in well
    under a second; ``extra`` is appended (TOML)."""

    def make(extra: str = "", data: Path | None = None, name: str = "tiny.toml") -> Path:
        path = tmp_path / name
        path.write_text(tiny_unet_toml(data or nuclei_data) + extra, encoding="utf-8")
        return path

    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, nuclei_data: Path) -> Path:
    """A finished run of the tiny preset (10 steps): checkpoints/best.pt and last.pt."""
    root = tmp_path_factory.mktemp("trained")
    preset = root / "tiny.toml"
    preset.write_text(tiny_unet_toml(nuclei_data), encoding="utf-8")
    assert_ok(invoke("train", preset, "--run-dir", root / "run"))
    return root / "run"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in ``tmp_path`` (default outputs such as runs/ land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def exported_package(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained run as a bioimage.io package folder (ONNX, TorchScript and state-dict
    weights, the preset attached). Shared: copy it before changing anything."""
    folder = tmp_path_factory.mktemp("exported") / "package"
    assert_ok(invoke("export", trained_run, "--format", "bioimageio", "--folder", "-o", folder))
    return folder


@pytest.fixture(scope="session")
def one_image(nuclei_data: Path) -> Path:
    """One 64 x 64 image of the nuclei data."""
    return nuclei_data / "IM" / "img_000.tif"


@pytest.fixture
def hostile_server() -> Iterator[Callable[[str], str]]:
    """``start(mode)``: ``http://127.0.0.1:PORT`` of a server that hangs, trickles or
    redirects to ``file:///etc/passwd``; stopped after the test."""
    with hostile_servers() as start:
        yield start
