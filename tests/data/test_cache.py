"""The array caches: hits, and no stale entry after a file or a setting changes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bioim2im.config import validate
from bioim2im.data.cache import ArrayCache, cache_key
from bioim2im.data.datasets import training_datasets
from bioim2im.plugin.manager import get_registry


class Maker:
    def __init__(self, value: float = 1.0) -> None:
        self.calls = 0
        self.value = value

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return np.full((1, 4, 4), self.value, np.float32)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_a_second_request_is_a_hit(mode: str, tmp_path: Path) -> None:
    cache = ArrayCache(mode, tmp_path / "cache")  # type: ignore[arg-type]
    make = Maker()
    first = cache.get("k", make)
    second = cache.get("k", make)
    assert make.calls == 1 and "k" in cache
    assert np.array_equal(first, second)
    if mode == "disk":
        assert (tmp_path / "cache" / "k.npy").is_file()
        assert isinstance(second, np.memmap)
        assert ArrayCache("disk", tmp_path / "cache").get("k", make) is not None and make.calls == 1


def test_no_cache_makes_every_time() -> None:
    cache = ArrayCache("none")
    make = Maker()
    cache.get("k", make)
    cache.get("k", make)
    assert make.calls == 2


def test_memory_cache_stays_within_its_limit() -> None:
    cache = ArrayCache("memory", memory_limit=100)  # one 4x4 float32 array is 64 bytes
    make = Maker()
    cache.get("a", make)
    cache.get("b", make)
    cache.get("a", make)
    cache.get("b", make)
    assert make.calls == 3 and "a" in cache and "b" not in cache
    assert not cache.has_room(64)


def test_key_changes_with_the_file_content_size_or_mtime(tmp_path: Path) -> None:
    file = tmp_path / "a.tif"
    tifffile.imwrite(file, np.zeros((4, 4), np.uint8))
    before = cache_key([file], {"normalize": "percentile"})
    assert cache_key([file], {"normalize": "percentile"}) == before
    stat = file.stat()
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    touched = cache_key([file], {"normalize": "percentile"})
    assert touched != before
    tifffile.imwrite(file, np.zeros((8, 8), np.uint8))
    assert cache_key([file], {"normalize": "percentile"}) not in (before, touched)


def test_key_changes_with_the_settings(tmp_path: Path) -> None:
    file = tmp_path / "a.tif"
    tifffile.imwrite(file, np.zeros((4, 4), np.uint8))
    keys = {
        cache_key([file], {"normalize": {"name": "percentile", "lower": 1.0}}),
        cache_key([file], {"normalize": {"name": "percentile", "lower": 2.0}}),
        cache_key([file], {"normalize": {"name": "zscore"}}),
        cache_key([file], {"normalize": {"name": "zscore"}, "zoom": [1.0, 0.5]}),
    }
    assert len(keys) == 4


def _dataset_sample(root: Path, cache_dir: Path, normalize: dict[str, object]) -> np.ndarray:
    table = {
        "data": {
            "path": str(root),
            "patch_size": [8, 8],
            "val_fraction": 0.0,
            "cache": "disk",
            "cache_dir": str(cache_dir),
            "normalize": normalize,
        },
        "model": {
            "backbone": {"name": "unet"},
            "heads": {"seg": {"name": "conv", "loss": {"name": "dice_ce", "sigmoid": True}}},
        },
    }
    train, _ = training_datasets(validate(table, get_registry(), "test"), check=False)
    return train.sample(0)["image"]


def test_datasets_never_serve_a_stale_disk_cache(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for role in ("IM", "GT"):
        (root / role).mkdir(parents=True)
        tifffile.imwrite(root / role / "a.tif", np.ones((8, 8), np.uint8))
    fixed = {"name": "fixed_range", "min": 0.0, "max": 10.0}
    cache_dir = tmp_path / "cache"
    assert np.allclose(_dataset_sample(root, cache_dir, fixed), 0.1)
    files = sorted(cache_dir.glob("*.npy"))
    assert len(files) == 2  # the image and the label
    assert np.allclose(_dataset_sample(root, cache_dir, fixed), 0.1)
    assert sorted(cache_dir.glob("*.npy")) == files  # a hit: nothing new written
    tifffile.imwrite(root / "IM" / "a.tif", np.full((8, 8), 5, np.uint8))
    assert np.allclose(_dataset_sample(root, cache_dir, fixed), 0.5)  # the file changed
    assert np.allclose(
        _dataset_sample(root, cache_dir, {**fixed, "max": 5.0}), 1.0
    )  # the setting changed
