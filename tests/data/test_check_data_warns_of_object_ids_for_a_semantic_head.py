"""`check --data` warns (and still passes) when the labels of a one-channel semantic head look
like object ids: that head counts every non-zero value as foreground."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

PRESET = """
extends = "segmentation-2d"
[data]
path = "{data}"
patch_size = [16, 16]
val_fraction = 0.0
"""


def dataset(root: Path, labels: np.ndarray) -> Path:
    for folder, array in (("IM", np.random.default_rng(0).random((32, 32))), ("GT", labels)):
        (root / folder).mkdir(parents=True)
        tifffile.imwrite(
            root / folder / "a.tif", array.astype(np.float32 if folder == "IM" else np.uint16)
        )
    preset = root / "preset.toml"
    preset.write_text(PRESET.format(data=root))
    return preset


def test_object_ids_for_a_one_channel_semantic_head_are_a_warning(tmp_path: Path, cli) -> None:
    ids = np.zeros((32, 32), np.uint16)
    for index in range(1, 8):  # seven objects, numbered
        ids[4 * index : 4 * index + 3, 2:30] = index
    preset = dataset(tmp_path / "ids", ids)
    result = cli("check", preset, "--data")
    assert result.code == 0, result.err
    text = " ".join((result.out + result.err).split())
    assert "warning:" in text and str(tmp_path / "ids" / "GT" / "a.tif") in text
    assert "more than 5 distinct non-zero values (1, 2, 3, 4, 5, ...)" in text
    assert "'seg'" in text and 'task = "instance"' in text


def test_a_mask_is_no_warning(tmp_path: Path, cli) -> None:
    mask = np.zeros((32, 32), np.uint16)
    mask[8:24, 8:24] = 255
    result = cli("check", dataset(tmp_path / "mask", mask), "--data")
    assert result.code == 0, result.err
    assert "warning:" not in result.out + result.err
