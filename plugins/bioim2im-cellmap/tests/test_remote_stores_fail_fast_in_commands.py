"""A CellMap command whose remote stores never answer ends in one message naming the store
within ``BIOIM2IM_REMOTE_TIMEOUT`` seconds (the hostile server runs on localhost)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_helpers import REMOTE_TIMEOUT, ended_within

pytest.importorskip("aiohttp")

TIMEOUT = REMOTE_TIMEOUT


@pytest.fixture(autouse=True)
def _short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOIM2IM_REMOTE_TIMEOUT", str(TIMEOUT))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


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
            'data.layout.classes=["mito"]',
        ],
    )
    error = ended_within(main)
    err = capsys.readouterr().err
    assert isinstance(error, SystemExit) and error.code == 2, (repr(error), err)
    assert "Traceback" not in err and err.count("error:") == 1, err
    assert url in err and f"within {TIMEOUT:g} s" in err, err
