"""Submitted arrays are placed on a crop's grid exactly as the CellMap challenge's evaluator
places them (the leaderboard's alignment, ``bioim2im cellmap evaluate``'s default).

Expected values are facts: the official evaluator (janelia-cellmap/cellmap-segmentation-challenge
at commit 6b9ad68, ``match_crop_space``) was run offline on the same arrays and attributes and
its outputs are copied here; the ``MatchedCrop`` cases are from its ``tests/test_matched_crop.py``
and ``tests/test_evaluate_metrics.py``. No code of the challenge is used.
"""

from __future__ import annotations

import numpy as np
import pytest

from bioim2im_cellmap.grids import Grid, align_like_the_challenge


def _along_z(values, vs, tr, crop_vs, crop_tr, n, *, nearest=True):
    grid = Grid((crop_vs, 1.0, 1.0), (crop_tr, 0.0, 0.0), (n, 1, 1))
    out = align_like_the_challenge(
        np.asarray(values).reshape(-1, 1, 1),
        None if vs is None else (vs, 1.0, 1.0),
        None if tr is None else (tr, 0.0, 0.0),
        grid,
        nearest=nearest,
    )
    assert out.shape == (n, 1, 1)
    return out.ravel().tolist()


ONE_TO_EIGHT = np.arange(1, 9, dtype=np.uint8)


@pytest.mark.parametrize(
    ("crop_tr", "src_tr", "expected"),
    [
        (0, -4, [3, 4, 5, 6, 7, 8, 0, 0]),
        (0, -3, [3, 4, 5, 6, 7, 8, 0, 0]),
        (0, -2, [2, 3, 4, 5, 6, 7, 8, 0]),
        (0, -1, [2, 3, 4, 5, 6, 7, 8, 0]),
        (0, 0, [1, 2, 3, 4, 5, 6, 7, 8]),
        (0, 1, [1, 2, 3, 4, 5, 6, 7, 8]),
        (0, 2, [0, 1, 2, 3, 4, 5, 6, 7]),
        (0, 3, [0, 1, 2, 3, 4, 5, 6, 7]),
        (0, 4, [0, 0, 1, 2, 3, 4, 5, 6]),
        (3, -1, [3, 4, 5, 6, 7, 8, 0, 0]),
        (3, 1, [2, 3, 4, 5, 6, 7, 8, 0]),
        (3, 3, [1, 2, 3, 4, 5, 6, 7, 8]),
        (3, 5, [1, 2, 3, 4, 5, 6, 7, 8]),
        (3, 7, [0, 1, 2, 3, 4, 5, 6, 7]),
    ],
)
def test_translations_snap_to_whole_voxels_as_the_challenge_rounds_them(crop_tr, src_tr, expected):
    assert _along_z(ONE_TO_EIGHT, 2.0, src_tr, 2.0, crop_tr, 8) == expected


@pytest.mark.parametrize(("shift", "first"), [(0, 0), (1, 0), (2, 1), (3, 2)])
def test_half_voxel_manifest_translations(shift, first):
    # Crop 557's z axis: voxel 1.74 nm, translation 23837.13 nm (13699.5 voxels).
    marker = np.zeros(4, np.uint8)
    marker[0] = 7
    out = _along_z(marker, 1.74, 23837.13 + shift * 1.74, 1.74, 23837.13, 8)
    assert out.index(7) == first


@pytest.mark.parametrize(
    ("vs", "tr", "crop_vs", "crop_tr", "n", "expected"),
    [
        (1.0, 0.5, 2.0, 1.0, 6, [2, 4, 6, 8, 0, 0]),
        (1.0, 0.5, 2.0, 3.0, 6, [4, 6, 8, 0, 0, 0]),
        (1.0, 0.0, 2.0, 0.0, 6, [2, 4, 6, 8, 0, 0]),
    ],
)
def test_downsampled_instances_then_placed(vs, tr, crop_vs, crop_tr, n, expected):
    assert _along_z(ONE_TO_EIGHT, vs, tr, crop_vs, crop_tr, n) == expected


@pytest.mark.parametrize(("tr", "crop_tr"), [(0.0, 0.0), (0.5, 0.0), (0.0, -0.5)])
def test_upsampled_instances_then_placed(tr, crop_tr):
    values = np.arange(1, 5, dtype=np.uint8)
    assert _along_z(values, 2.0, tr, 1.0, crop_tr, 10) == [1, 1, 2, 2, 3, 3, 4, 4, 0, 0]


def test_missing_metadata():
    marker = np.zeros(4, np.uint8)
    marker[0] = 7
    # A voxel size without a translation: the first voxel goes on the crop's first voxel.
    assert _along_z(marker, 2.0, None, 2.0, 100.0, 8).index(7) == 0
    # Neither, another shape: centred.
    assert _along_z(marker, None, None, 2.0, 100.0, 8).index(7) == 2
    assert _along_z(np.arange(12), None, None, 2.0, 100.0, 8) == [2, 3, 4, 5, 6, 7, 8, 9]
    # A translation without a voxel size: centred, then shifted with the crop's voxel size.
    eight = np.zeros(8, np.uint8)
    eight[0] = 7
    assert _along_z(eight, None, 4.0, 2.0, 0.0, 8).index(7) == 2
    assert _along_z(marker, None, 4.0, 2.0, 0.0, 8).index(7) == 4
    # Entirely outside: nothing.
    assert not any(_along_z(marker, 2.0, 100.0, 2.0, 0.0, 8))


def test_semantic_downsampling_is_anti_aliased():
    sheet = np.zeros((8, 8, 8), np.float32)
    sheet[3] = 1.0
    grid = Grid((4.0,) * 3, (0.0,) * 3, (4, 4, 4))
    out = align_like_the_challenge(sheet, (2.0,) * 3, (0.0,) * 3, grid, nearest=False)
    assert out.dtype == bool and not out.any()  # without anti-aliasing z=1 would be 0.5
    cube = np.zeros((16, 16, 16), np.float32)
    cube[4:12, 4:12, 4:12] = 1.0
    grid = Grid((4.0,) * 3, (0.0,) * 3, (8, 8, 8))
    out = align_like_the_challenge(cube, (2.0,) * 3, (0.0,) * 3, grid, nearest=False)
    assert int(out.sum()) == 64 and out[4, 4].astype(int).tolist() == [0, 0, 1, 1, 1, 1, 0, 0]


def test_semantic_resampling_keeps_the_value_range_and_the_native_size_no_threshold():
    u = np.zeros((4, 4, 4), np.uint8)
    u[:2] = 255
    grid = Grid((4.0,) * 3, (0.0,) * 3, (2, 2, 2))
    assert align_like_the_challenge(u, (2.0,) * 3, (0.0,) * 3, grid, nearest=False).all()
    ones = np.ones((2, 2, 2), np.float32)
    grid = Grid((2.0,) * 3, (0.0,) * 3, (4, 4, 4))
    assert align_like_the_challenge(ones, (4.0,) * 3, (0.0,) * 3, grid, nearest=False).all()
    prob = np.full((4, 4, 4), 0.3, np.float32)
    grid = Grid((2.0,) * 3, (0.0,) * 3, (4, 4, 4))
    same = align_like_the_challenge(prob, (2.0,) * 3, (0.0,) * 3, grid, nearest=False)
    assert same.dtype == np.float32 and same[0, 0, 0] == pytest.approx(0.3)


def test_instance_downsampling_of_floats_is_blurred_of_integers_not():
    lab = np.zeros((8, 8, 8), np.float32)
    lab[:4], lab[4:] = 1, 2
    grid = Grid((4.0,) * 3, (0.0,) * 3, (4, 4, 4))
    out = align_like_the_challenge(lab, (2.0,) * 3, (0.0,) * 3, grid, nearest=True)
    assert sorted(set(np.round(out.ravel(), 4).tolist())) == pytest.approx(
        [
            1.0,
            1.1061,
            1.1064,
            1.1067,
            1.4256,
            1.5955,
            1.5957,
            1.5959,
            1.7856,
            1.7859,
            1.7861,
            1.7863,
            1.7866,
            1.9987,
            1.9992,
            1.9997,
        ]
    )
    out = align_like_the_challenge(
        lab.astype(np.uint16), (2.0,) * 3, (0.0,) * 3, grid, nearest=True
    )
    assert out.dtype == np.uint16 and sorted(set(out.ravel().tolist())) == [1, 2]


# --- tests/test_matched_crop.py and tests/test_evaluate_metrics.py (match_crop_space) ---


def test_instance_upsampling_by_nearest():
    grid = Grid((1.0, 1.0), (0.0, 0.0), (4, 4))
    out = align_like_the_challenge(
        np.array([[0, 1], [2, 0]], np.uint8), (2.0, 2.0), (0.0, 0.0), grid, nearest=True
    )
    assert out.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]]
    out = align_like_the_challenge(
        np.array([[1, 0], [0, 0]], np.uint8), (2.0, 2.0), (0.0, 0.0), grid, nearest=True
    )
    assert out[0:2, 0:2].tolist() == [[1, 1], [1, 1]]


def test_semantic_ones_and_zeros_upsampled():
    grid = Grid((1.0, 1.0), (0.0, 0.0), (4, 4))
    ones = align_like_the_challenge(np.ones((2, 2), np.float32), (2, 2), None, grid, nearest=False)
    zeros = align_like_the_challenge(
        np.zeros((2, 2), np.float32), (2, 2), None, grid, nearest=False
    )
    assert ones.dtype == bool and ones.all() and not zeros.any()


def test_translated_arrays_and_crops():
    a = np.zeros((5, 5), np.uint8)
    a[0, 0] = 9
    out = align_like_the_challenge(
        a, (1, 1), (2, 0), Grid((1.0, 1.0), (0.0, 0.0), (5, 5)), nearest=True
    )
    assert out[2, 0] == 9 and out[0, 0] == 0
    b = np.zeros((5, 5), np.uint8)
    b[4, 0] = 7
    out = align_like_the_challenge(
        b, (1, 1), (0, 0), Grid((1.0, 1.0), (2.0, 0.0), (5, 5)), nearest=True
    )
    assert out[2, 0] == 7
    c = np.arange(16, dtype=np.uint8).reshape(4, 4)
    same = align_like_the_challenge(
        c, (1, 1), (0, 0), Grid((1.0, 1.0), (0.0, 0.0), (4, 4)), nearest=True
    )
    assert np.array_equal(same, c)
    cut = align_like_the_challenge(
        c, (1, 1), (0, 0), Grid((1.0, 1.0), (1.0, 1.0), (2, 2)), nearest=True
    )
    assert np.array_equal(cut, c[1:3, 1:3])


def test_no_voxel_size_is_centre_padded():
    out = align_like_the_challenge(
        np.ones((2, 2), np.float32), None, None, Grid((1.0, 1.0), (0.0, 0.0), (4, 4)), nearest=False
    )
    assert out[1:3, 1:3].all() and not out[0].any() and not out[3].any()
    assert not out[:, 0].any() and not out[:, 3].any()
