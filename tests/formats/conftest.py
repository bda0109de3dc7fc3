"""Fixtures of the export tests: no network, one torch thread, a trained run."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from export_helpers import TRAINED

from bioim2im.data.synthetic import write_dataset
from tiny_presets import tiny_unet_toml


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every test here runs without a network: a connection attempt is recorded and refused,
    and the test fails if there was one."""
    attempts: list[str] = []
    original = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(repr(address))
            raise OSError("network access during an export test")
        original(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert not attempts, f"the test tried to reach the network: {attempts}"


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bioim2im.api import train

    root = tmp_path_factory.mktemp("trained")
    data = write_dataset(
        root / "data", kind="nuclei", n_images=4, shape=(64, 64), seed=0, label_kind="semantic"
    )
    preset = root / "preset.toml"
    preset.write_text(tiny_unet_toml(data, TRAINED), encoding="utf-8")
    train(preset, run_dir=root / "run")
    return root / "run"
