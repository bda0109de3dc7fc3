"""Window positions, blending weights and block planning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bioim2im.prediction.blockwise.blocks import HeadGeometry, default_block_size, plan_blocks
from bioim2im.prediction.blockwise.windows import (
    constant_importance_map,
    gaussian_importance_map,
    gaussian_profiles,
    importance_map,
    pad_widths,
    window_starts,
)


@pytest.mark.parametrize("roi", [(32, 32), (17, 24), (8, 16, 16), (1, 9)])
def test_gaussian_map_peaks_in_the_centre_and_has_no_zero_weight(roi: tuple[int, ...]) -> None:
    weights = gaussian_importance_map(roi)
    assert weights.shape == roi
    assert weights.dtype == np.float32
    assert weights.max() == pytest.approx(1.0)
    assert weights.min() >= 1e-3 ** len(roi)
    # One profile per axis: the sums of the weights of a grid of windows are separable too.
    profiles = gaussian_profiles(roi)
    product = profiles[0]
    for profile in profiles[1:]:
        product = np.multiply.outer(product, profile)
    np.testing.assert_allclose(weights, product, rtol=1e-6)
    # Symmetric under every flip, so TTA and mirrored windows weigh alike.
    for axis in range(len(roi)):
        np.testing.assert_array_equal(weights, np.flip(weights, axis))
    # The weight falls from the centre towards every border.
    centre = tuple(n // 2 for n in roi)
    assert weights[centre] == weights.max()
    corner = tuple(0 for _ in roi)
    assert weights[corner] <= weights[centre]


def test_gaussian_map_sigma_is_an_eighth_of_the_window() -> None:
    roi = 65  # odd: the centre is a voxel
    profile = gaussian_importance_map((roi,))
    sigma = roi / 8
    centre = roi // 2
    at_sigma = np.interp(centre + sigma, np.arange(roi), profile)
    assert at_sigma == pytest.approx(np.exp(-0.5), rel=1e-2)
    # Four sigmas out the Gaussian is below the clamp.
    assert profile[0] == pytest.approx(1e-3)


def test_constant_map_and_blend_names() -> None:
    np.testing.assert_array_equal(constant_importance_map((3, 4)), np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(importance_map("constant", (3, 4)), np.ones((3, 4)))
    np.testing.assert_array_equal(
        importance_map("gaussian", (5, 6)), gaussian_importance_map((5, 6))
    )
    with pytest.raises(ValueError, match="blend"):
        importance_map("linear", (4, 4))


@pytest.mark.parametrize(
    ("size", "roi", "overlap"),
    [(100, 32, 0.25), (64, 32, 0.5), (33, 32, 0.0), (1000, 96, 0.5), (129, 64, 0.3), (50, 7, 0.9)],
)
def test_windows_cover_the_axis_evenly(size: int, roi: int, overlap: float) -> None:
    starts = window_starts(size, roi, overlap)
    assert starts[0] == 0
    assert starts[-1] == size - roi
    covered = np.zeros(size, bool)
    for start in starts:
        covered[start : start + roi] = True
    assert covered.all()
    steps = np.diff(starts)
    assert steps.max() <= np.ceil(roi * (1 - overlap))
    assert steps.max() - steps.min() <= 1  # evenly spaced
    assert steps.min() > 0


def test_window_grid_matches_monais_when_the_step_divides_the_axis() -> None:
    # MONAI's interval is int(roi * (1 - overlap)); with 64 = 16 + 3 * 16 both grids agree.
    assert window_starts(64, 16, 0.0) == [0, 16, 32, 48]
    assert window_starts(64, 32, 0.5) == [0, 16, 32]


@pytest.mark.parametrize("size", [1, 5, 32])
def test_an_axis_not_longer_than_the_window_gets_one_window(size: int) -> None:
    assert window_starts(size, 32, 0.25) == [0]
    before, after = pad_widths(size, 32)
    assert before + size + after == 32
    assert abs(before - after) <= 1


def test_window_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="overlap"):
        window_starts(10, 4, 1.0)
    with pytest.raises(ValueError, match="window size"):
        window_starts(10, 0, 0.5)


@pytest.mark.parametrize(
    ("shape", "roi", "block"),
    [
        ((100, 90), (32, 32), (40, 24)),
        ((20, 70, 33), (8, 16, 48), (8, 50, 16)),
        ((7, 5), (16, 16), (3, 2)),
    ],
)
def test_block_cores_tile_the_image_and_run_exactly_the_windows_touching_them(
    shape: tuple[int, ...], roi: tuple[int, ...], block: tuple[int, ...]
) -> None:
    plan = plan_blocks(shape, roi, 0.25, block_size=block)
    hits = np.zeros(shape, int)
    for b in plan:
        hits[b.core] += 1
        per_axis = []
        for axis, region in enumerate(b.core):
            padded = (region.start + plan.pad[axis][0], region.stop + plan.pad[axis][0])
            touching = [w for w in plan.starts[axis] if w < padded[1] and w + roi[axis] > padded[0]]
            origin = touching[0]
            assert b.origin[axis] == origin
            per_axis.append([w - origin for w in touching])
            # The read region plus its padding is exactly the span of those windows.
            read = b.read[axis].stop - b.read[axis].start
            assert read + sum(b.pad[axis]) == touching[-1] + roi[axis] - origin
            assert b.core_start[axis] == padded[0] - origin
            # The halo reaches at least the overlap beyond the core, where the image allows.
            overlap = roi[axis] - int(np.ceil(roi[axis] * 0.75))
            assert b.read[axis].start <= max(region.start - overlap, 0)
            assert b.read[axis].stop >= min(region.stop + overlap, shape[axis])
        # Every window touching the core, in sweep order: the first sweep axis slowest.
        sweep = plan.sweep
        expected = [
            tuple(combo[sweep.index(a)] for a in range(len(shape)))
            for combo in itertools.product(*(per_axis[a] for a in sweep))
        ]
        assert list(b.windows) == expected
    np.testing.assert_array_equal(hits, 1)


def test_block_size_defaults_to_several_windows_and_follows_chunks_and_whole_axes() -> None:
    assert default_block_size((64, 64, 64)) == (320, 320, 320)
    assert default_block_size((256, 256))[0] >= 16 * 256
    assert default_block_size((512, 512, 512)) == (1024, 1024, 1024)  # at least two windows
    plan = plan_blocks(
        (100, 300, 300), (16, 64, 64), block_size=(20, 100, 100), chunk_size=(1, 64, 64)
    )
    assert plan.block_size == (20, 128, 128)
    plan = plan_blocks((100, 300, 300), (16, 64, 64), block_size=(20, 100, 100), whole_axes=(0,))
    assert plan.block_size == (100, 100, 100)
    assert plan.grid == (1, 3, 3)
    assert plan_blocks((10, 10), (4, 4), block_size=(50, 50)).block_size == (10, 10)


def test_head_geometry_maps_regions_to_outputs() -> None:
    geometry = HeadGeometry(scale=(1, 2, 2), dropped_axes=(0,))
    assert geometry.kept_axes == (1, 2)
    assert geometry.output_shape((10, 20, 30)) == (40, 60)
    assert geometry.output_region((slice(0, 10), slice(4, 8), slice(0, 5))) == (
        slice(8, 16),
        slice(0, 10),
    )
    with pytest.raises(ValueError, match="positive integers"):
        HeadGeometry(scale=(0, 1))
    with pytest.raises(ValueError, match="dropped axes"):
        HeadGeometry(scale=(1, 1), dropped_axes=(2,))
