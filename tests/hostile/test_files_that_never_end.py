"""Where a command expects a file it reads (a preset, a preset it extends, the data folder or its
CSV manifest, an input manifest, a prediction table, an image), a FIFO (which blocks a read
forever), a device that never ends (``/dev/zero``, ``/dev/urandom``) or a file far larger than
any such file is refused with one message, at once, without reading it.

Each command runs in a process of its own with a time limit and a memory limit: before the
fix, the FIFO hung and ``/dev/zero`` filled the memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_helpers import ENDLESS, Limits, assert_user_error, endless, run

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def _cli(*args: str | Path, cwd: Path) -> object:
    return run(*args, cwd=cwd, limits=Limits(extra_memory=1 << 30), timeout=60)


def _expect(result: object, path: Path | str) -> None:
    assert_user_error(result, str(path))  # type: ignore[arg-type]
    assert "regular file" in result.err, result  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ENDLESS)
def test_a_preset_or_the_preset_it_extends(tmp_path: Path, kind: str) -> None:
    preset = endless(kind, tmp_path / "endless.toml")
    _expect(_cli("check", preset, cwd=tmp_path), preset)
    child = tmp_path / "child.toml"
    child.write_text(f'extends = "{preset}"\n', encoding="utf-8")
    _expect(_cli("check", child, cwd=tmp_path), preset)


@pytest.mark.parametrize("kind", ENDLESS)
def test_the_data_path_or_its_manifest(
    tiny_preset: Callable[..., Path], tmp_path: Path, kind: str
) -> None:
    data = endless(kind, tmp_path / "data")
    _expect(_cli("check", "--data", tiny_preset(data=data), cwd=tmp_path), data)
    # A folder whose lone CSV manifest never ends.
    folder = tmp_path / "folder"
    manifest = endless(kind, folder / "manifest.csv")
    preset = tiny_preset(data=folder, name="folder.toml")
    _expect(_cli("check", "--data", preset, cwd=tmp_path), manifest)


@pytest.mark.parametrize("kind", ENDLESS)
def test_an_input_manifest_an_image_or_a_prediction_table(
    trained_run: Path, tmp_path: Path, kind: str
) -> None:
    manifest = endless(kind, tmp_path / "inputs.csv")
    _expect(
        _cli("predict", trained_run, "-i", manifest, "-o", tmp_path / "o1", cwd=tmp_path), manifest
    )
    image = endless(kind, tmp_path / "cells.tif")
    _expect(_cli("predict", trained_run, "-i", image, "-o", tmp_path / "o2", cwd=tmp_path), image)
    table = endless(kind, tmp_path / "saved" / "predictions.csv")
    result = _cli(
        "postprocess", trained_run, "-i", table.parent, "-o", tmp_path / "o3", cwd=tmp_path
    )
    _expect(result, table)
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))


def test_a_preset_larger_than_any_preset_is_refused(tmp_path: Path) -> None:
    preset = tmp_path / "huge.toml"
    with preset.open("w", encoding="utf-8") as handle:
        handle.write('extends = "segmentation-2d"\n')
        handle.write("# " + "x" * (8 << 20) + "\n")  # 8 MiB: presets are kilobytes
    result = _cli("check", preset, cwd=tmp_path)
    assert_user_error(result, str(preset), "larger than")


@pytest.mark.parametrize("kind", ENDLESS)
def test_a_checkpoint_to_predict_with_or_to_start_from(
    tiny_preset: Callable[..., Path], nuclei_data: Path, tmp_path: Path, kind: str
) -> None:
    checkpoint = endless(kind, tmp_path / "model.pt")
    image = next((nuclei_data / "IM").iterdir())
    result = _cli("predict", checkpoint, "-i", image, "-o", tmp_path / "out", cwd=tmp_path)
    _expect(result, checkpoint)
    preset = tiny_preset(data=nuclei_data)
    result = _cli(
        "train", preset, "--run-dir", tmp_path / "run", "--set", f'train.init_from="{checkpoint}"',
        cwd=tmp_path,
    )  # fmt: skip
    _expect(result, checkpoint)
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
