"""`check --data`: every bad-data problem reported at once, each naming its file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from rich.console import Console

from bioim2im.config import Preset, validate
from bioim2im.data.preflight import Report, ensure_usable, preflight
from bioim2im.errors import UserError
from bioim2im.plugin.manager import get_registry


def preset(path: Path, out_channels: int = 2, **data: Any) -> Preset:
    table = {
        "data": {"path": str(path), "patch_size": [16, 16], "val_fraction": 0.0, **data},
        "model": {
            "backbone": {"name": "unet"},
            "heads": {
                "seg": {
                    "name": "conv",
                    "out_channels": out_channels,
                    "loss": {"name": "dice_ce", "sigmoid": True},
                }
            },
        },
    }
    return validate(table, get_registry(), "test preset")


def tif(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)
    return path


def good_pair(root: Path, name: str, shape: tuple[int, int] = (32, 32)) -> None:
    rng = np.random.default_rng(0)
    tif(root / "IM" / f"{name}.tif", rng.random(shape).astype(np.float32))
    tif(root / "GT" / f"{name}.tif", rng.integers(0, 2, shape).astype(np.uint8))


def problem_about(report: Report, file: Path, words: str) -> str:
    matches = [p for p in report.problems if str(file) in p and words in p]
    assert matches, f"no problem about {file} mentioning {words!r} in {report.problems}"
    return matches[0]


def test_a_good_dataset_has_no_problems_and_a_summary(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        good_pair(tmp_path, name)
    report = preflight(preset(tmp_path, val_fraction=0.34))
    assert report.problems == []
    assert report.layout == "folders" and report.pairs == {"train": 2, "val": 1}
    image = next(f for f in report.files if f.role == "image")
    assert image.shape == (32, 32) and image.axes == "YX" and image.dtype == "float32"
    assert 0.0 <= image.low < image.high <= 1.0
    ensure_usable(report)
    out = io.StringIO()
    Console(file=out, width=150).print(report)
    text = out.getvalue()
    assert "train" in text and "val" in text and "float32" in text and "dataset is usable" in text


def test_every_problem_at_once_each_naming_its_file(tmp_path: Path) -> None:
    good_pair(tmp_path, "good")
    rng = np.random.default_rng(0)
    tif(tmp_path / "IM" / "no_label.tif", rng.random((32, 32)).astype(np.float32))
    tif(tmp_path / "GT" / "no_image.tif", np.zeros((32, 32), np.uint8))
    tif(tmp_path / "IM" / "mismatch.tif", rng.random((32, 32)).astype(np.float32))
    tif(tmp_path / "GT" / "mismatch.tif", np.zeros((30, 32), np.uint8))
    truncated = tif(tmp_path / "IM" / "truncated.tif", rng.random((64, 64)).astype(np.float32))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    tif(tmp_path / "GT" / "truncated.tif", np.zeros((64, 64), np.uint8))
    tif(tmp_path / "IM" / "complex.tif", np.zeros((32, 32), np.complex64))
    tif(tmp_path / "GT" / "complex.tif", np.zeros((32, 32), np.uint8))
    tif(tmp_path / "IM" / "classes.tif", rng.random((32, 32)).astype(np.float32))
    labels = np.zeros((32, 32), np.uint8)
    labels[0, :3] = [1, 5, 7]
    tif(tmp_path / "GT" / "classes.tif", labels)
    with_nan = rng.random((32, 32)).astype(np.float32)
    with_nan[3, 3] = np.nan
    with_nan[4, 4] = np.inf
    tif(tmp_path / "IM" / "nan.tif", with_nan)
    tif(tmp_path / "GT" / "nan.tif", np.zeros((32, 32), np.uint8))

    report = preflight(preset(tmp_path))
    problem_about(report, tmp_path / "IM" / "no_label.tif", "no matching file in")
    problem_about(report, tmp_path / "GT" / "no_image.tif", "no matching input image")
    problem_about(
        report, tmp_path / "GT" / "mismatch.tif", "has shape 30Y x 32X but its input image"
    )
    problem_about(report, tmp_path / "IM" / "truncated.tif", "truncated")
    problem_about(report, tmp_path / "IM" / "complex.tif", "complex64 is not supported")
    assert "label values 5, 7 are outside the classes 0..1" in problem_about(
        report, tmp_path / "GT" / "classes.tif", "label values"
    )
    problem_about(report, tmp_path / "IM" / "nan.tif", "2 NaN or Inf")
    assert len(report.problems) == 7
    with pytest.raises(UserError) as raised:
        ensure_usable(report)
    assert raised.value.message == f"dataset {tmp_path} has 7 problems:"
    assert raised.value.problems == report.problems

    tolerant = preflight(preset(tmp_path, nan_policy="zero"))
    assert not any("NaN" in p for p in tolerant.problems)


def test_binary_heads_take_any_label_value_and_ignore_value_is_allowed(tmp_path: Path) -> None:
    good_pair(tmp_path, "a")
    tif(tmp_path / "GT" / "a.tif", np.full((32, 32), 200, np.uint8))
    assert preflight(preset(tmp_path, out_channels=1)).problems == []
    table = preset(tmp_path, out_channels=3).model_dump()
    table["model"]["heads"]["seg"]["ignore_value"] = 200
    assert preflight(validate(table, get_registry(), "test")).problems == []


def test_missing_folder_and_empty_dataset(tmp_path: Path) -> None:
    tif(tmp_path / "IM" / "a.tif", np.zeros((32, 32), np.float32))
    report = preflight(preset(tmp_path, layout="folders"))
    assert report.problems == [
        f"missing folder {tmp_path / 'GT'} (layout 'folders' needs IM/ and GT/)"
    ]
    (tmp_path / "GT").mkdir()
    (tmp_path / "IM" / "a.tif").unlink()
    empty = preflight(preset(tmp_path, layout="folders"))
    assert any("holds no images" in p for p in empty.problems)


def test_images_smaller_than_the_patch_without_padding(tmp_path: Path) -> None:
    good_pair(tmp_path, "big", (32, 32))
    good_pair(tmp_path, "small", (8, 40))
    assert preflight(preset(tmp_path)).problems == []
    problems = preflight(preset(tmp_path, pad=False)).problems
    assert len(problems) == 1 and str(tmp_path / "IM" / "small.tif") in problems[0]
    assert "data.pad is false" in problems[0] and "big.tif" not in problems[0]


def test_a_pair_whose_files_are_all_unusable_leaves_no_training_images(tmp_path: Path) -> None:
    tif(tmp_path / "IM" / "a.tif", np.zeros((32, 32), np.complex64))
    tif(tmp_path / "GT" / "a.tif", np.zeros((32, 32), np.uint8))
    problems = preflight(preset(tmp_path)).problems
    assert any("none of the 1 training pair(s) is usable" in p for p in problems)


def test_a_normalisation_among_the_augmentations_is_a_problem(tmp_path: Path) -> None:
    good_pair(tmp_path, "a")
    problems = preflight(preset(tmp_path, augment=[{"name": "zscore"}])).problems
    assert problems == [
        "data.augment: 'zscore' is a normalisation, not an augmentation "
        "(use it as data.normalize or a head's target_normalize)"
    ]
    problems = preflight(preset(tmp_path, normalize={"name": "flip"})).problems
    assert problems == [
        "data.normalize: 'flip' is an augmentation, not a normalisation (it belongs in data.augment)"
    ]


def test_a_volume_for_a_2d_model_gets_the_hint_that_fits_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    volume = rng.random((6, 32, 32)).astype(np.float32)
    # Axes named by the file's metadata (OME-TIFF): data.axes cannot relabel them.
    (tmp_path / "ome" / "IM").mkdir(parents=True)
    tifffile.imwrite(
        tmp_path / "ome" / "IM" / "v.ome.tif",
        volume,
        ome=True,
        photometric="minisblack",
        metadata={"axes": "ZYX"},
    )
    tif(tmp_path / "ome" / "GT" / "v.ome.tif", np.zeros((6, 32, 32), np.uint8))
    report = preflight(preset(tmp_path / "ome"))
    message = problem_about(report, tmp_path / "ome" / "IM" / "v.ome.tif", "3 spatial axes")
    assert "metadata names its axes" in message and "data.axes" in message
    assert 'set data.axes, e.g. "TYX"' not in message
    # Axes only guessed from the shape (a plain TIFF): data.axes is the way out.
    tif(tmp_path / "plain" / "IM" / "v.tif", volume)
    tif(tmp_path / "plain" / "GT" / "v.tif", np.zeros((6, 32, 32), np.uint8))
    report = preflight(preset(tmp_path / "plain"))
    plain = next(p for p in report.problems if "spatial axes" in p)
    assert 'set data.axes, e.g. "TYX"' in plain
