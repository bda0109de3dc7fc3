"""Pyramid levels in physical space: the level nearest a scale is read, and resampled exactly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from stores import CROPS, scene, write_multiscale

from bioim2im.errors import UserError
from bioim2im.io.multiscale import Level, nearest_level, open_levels


def raw(root: Path, dataset: str = "jrc_alpha") -> str:
    return str(root / "data" / dataset / f"{dataset}.zarr" / "recon-1" / "em" / "fibsem-uint8")


def test_levels_carry_nanometer_scales_and_translations(cellmap_root: Path):
    levels = open_levels(raw(cellmap_root))
    assert [level.name for level in levels] == ["s0", "s1", "s2"]
    assert [level.scale for level in levels] == [(4.0,) * 3, (8.0,) * 3, (16.0,) * 3]
    # Voxel centres: s1's first voxel covers s0's first two.
    assert [level.translation for level in levels] == [(2.0,) * 3, (4.0,) * 3, (8.0,) * 3]
    assert all(np.allclose(level.start, 0) and np.allclose(level.stop, 384) for level in levels)


def test_nearest_level_per_axis(cellmap_root: Path):
    alpha, beta = open_levels(raw(cellmap_root)), open_levels(raw(cellmap_root, "jrc_beta"))
    assert nearest_level(alpha, (8, 8, 8)).name == "s1"
    assert nearest_level(alpha, (5, 5, 5)).name == "s0"
    # Nearest in ratio: 12 nm is nearer 16 than 8; the geometric middle is a tie, won by the finer.
    assert nearest_level(alpha, (12, 12, 12)).name == "s2"
    assert nearest_level(alpha, (math.sqrt(128),) * 3).name == "s1"
    # Anisotropic 6x4x4 nm: (12, 8, 8) is s1 exactly; 8 nm isotropic is nearest to s1 too.
    assert nearest_level(beta, (12, 8, 8)).name == "s1"
    assert nearest_level(beta, (8, 8, 8)).name == "s1"
    assert nearest_level(beta, (6, 4, 4)).name == "s0"


def test_sampling_on_the_levels_grid_is_a_slice(cellmap_root: Path):
    level = nearest_level(open_levels(raw(cellmap_root)), (8, 8, 8))
    whole = level.read()
    first = np.array(level.translation) + np.array([3, 5, 7]) * 8
    patch = level.sample(first, (8, 8, 8), (4, 6, 5), order=1)
    assert patch.dtype == np.uint8
    np.testing.assert_array_equal(patch, whole[3:7, 5:11, 7:12])


def test_labels_coarser_than_asked_are_repeated_and_finer_are_picked(cellmap_root: Path):
    crop = CROPS[1]  # 8 nm crop of mito
    location = (
        cellmap_root
        / "data"
        / "jrc_alpha"
        / "jrc_alpha.zarr"
        / "recon-1"
        / "labels"
        / "groundtruth"
        / "crop2"
        / "mito"
    )
    levels = open_levels(location)
    s0 = levels[0]
    assert s0.scale == (8.0,) * 3 and s0.translation == crop.translation
    truth = s0.read()
    # At 4 nm, each 8 nm voxel becomes 2x2x2 (voxel centres at +-2 nm of the coarse centre).
    first = np.array(crop.translation) - 2
    fine = s0.sample(first, (4, 4, 4), (48, 48, 48), order=0)
    expected = truth.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    np.testing.assert_array_equal(fine, expected)
    # At 16 nm from s0: every other voxel, by nearest neighbour (centre 4 nm past s0's).
    coarse = s0.sample(np.array(crop.translation) + 4, (16, 16, 16), (12, 12, 12), order=0)
    np.testing.assert_array_equal(coarse, truth[1::2, 1::2, 1::2])


def test_linear_resampling_matches_the_scene_and_outside_is_filled(tmp_path: Path):
    values = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    level = Level.in_memory(values, (2.0, 2.0, 2.0), (1.0, 1.0, 1.0))
    # Halfway between voxel centres along X: the mean of the neighbours.
    half = level.sample((1.0, 1.0, 2.0), (2.0, 2.0, 2.0), (4, 5, 5), order=1)
    np.testing.assert_allclose(half, (values[..., :-1] + values[..., 1:]) / 2)
    # A grid reaching past the array: NaN outside, or the edge value.
    past = level.sample((1.0, 1.0, -3.0), (2.0, 2.0, 2.0), (1, 1, 3), order=0, outside=np.nan)
    assert np.isnan(past[0, 0, :2]).all() and past[0, 0, 2] == values[0, 0, 0]
    edge = level.sample((1.0, 1.0, -3.0), (2.0, 2.0, 2.0), (1, 1, 3), order=0)
    np.testing.assert_array_equal(edge[0, 0], values[0, 0, 0])


def test_single_arrays_need_a_voxel_size(tmp_path: Path):
    import zarr

    group = zarr.open_group(tmp_path / "g.zarr", mode="w", zarr_format=2)
    array = group.create_array("a", shape=(2, 2, 2), dtype="uint8")
    with pytest.raises(UserError, match="no voxel size"):
        open_levels(tmp_path / "g.zarr" / "a")
    array.attrs.update(voxel_size=[4, 4, 4], translation=[2, 2, 2])
    (level,) = open_levels(tmp_path / "g.zarr" / "a")
    assert level.scale == (4.0,) * 3 and level.translation == (2.0,) * 3
    with pytest.raises(UserError, match="multiscales"):
        open_levels(tmp_path / "g.zarr")


def test_micrometer_metadata_is_converted(tmp_path: Path):
    write_multiscale(tmp_path / "m", [(np.zeros((2, 2, 2), np.uint8), (0.004,) * 3, (0.002,) * 3)])
    import zarr

    group = zarr.open_group(tmp_path / "m", mode="r+")
    attrs = group.attrs["multiscales"]
    for axis in attrs[0]["axes"]:
        axis["unit"] = "micrometer"
    group.attrs["multiscales"] = attrs
    (level,) = open_levels(tmp_path / "m")
    assert np.allclose(level.scale, 4.0) and np.allclose(level.translation, 2.0)


def test_scene_is_consistent_across_crop_levels(cellmap_root: Path):
    crop = CROPS[0]
    base = (
        cellmap_root
        / "data"
        / "jrc_alpha"
        / "jrc_alpha.zarr"
        / "recon-1"
        / "labels"
        / "groundtruth"
        / "crop1"
        / "nuc"
    )
    s0, s1 = open_levels(base)
    assert s1.scale == (8.0,) * 3
    np.testing.assert_array_equal(s1.read(), scene(s1.translation, s1.scale, s1.shape)["nuc"])
    np.testing.assert_array_equal(s0.read(), crop.labels()["nuc"])
