"""The planning rules on their own: topology (nnU-Net's pooling rule), patches, batches on a CPU
and a GPU, normalisation, rounding."""

from __future__ import annotations

from pathlib import Path

import pytest

from bioim2im.planning import rules
from bioim2im.planning.fingerprint import Fingerprint, Objects, Target
from bioim2im.planning.rules import Machine

CPU = Machine("cpu", 2)


def fingerprint(shape: list[int], voxel: list[float] | None, **intensity: float) -> Fingerprint:
    values = {"p0.1": 0.0, "p1": 0.01, "p50": 0.1, "p99": 0.9, "p99.8": 0.95, "p99.9": 1.0}
    values.update({k.replace("_", "."): v for k, v in intensity.items()})
    return Fingerprint(
        path=Path("data"),
        spatial_dims=len(shape),
        axes="ZYX"[-len(shape) :],
        images=2,
        shapes=[shape, shape],
        median_shape=shape,
        min_shape=shape,
        channels=1,
        dtype="float32",
        voxel_size=voxel,
        voxel_size_source="metadata" if voxel else "unknown",
        voxel_sizes_differ=False,
        intensity={**values, "mean": 0.2, "std": 0.2},
    )


@pytest.mark.parametrize(
    ("sizes", "spacing", "levels", "expected"),
    [
        # Isotropic: every axis halved while it keeps 4 voxels.
        ([32, 64, 64], [1, 1, 1], 4, [[2, 2, 2]] * 3),
        # Z 2.5x coarser: kept at the first level, then halved with Y and X.
        ([32, 64, 64], [2.5, 1, 1], 4, [[1, 2, 2], [2, 2, 2], [2, 2, 2]]),
        # Z 5x coarser: halved only once Y and X voxels are 4 long (after two levels).
        ([8, 64, 64], [5, 1, 1], 4, [[1, 2, 2], [1, 2, 2], [2, 2, 2]]),
        # ... and too thin to be halved at all.
        ([6, 64, 64], [5, 1, 1], 4, [[1, 2, 2], [1, 2, 2], [1, 2, 2]]),
        # Twice as coarse exactly: not halved first (nnU-Net: only below twice).
        ([32, 64, 64], [2, 1, 1], 3, [[1, 2, 2], [2, 2, 2]]),
        # Small: as many levels as keep 4 voxels; never fewer than one downsampling.
        ([12, 10], [1, 1], 4, [[2, 2]]),
        ([5, 6], [1, 1], 4, [[1, 2]]),
    ],
)
def test_topology_follows_nnunet(
    sizes: list[int], spacing: list[float], levels: int, expected: list[list[int]]
) -> None:
    assert rules.topology(sizes, spacing, levels) == expected


def test_rounding_covers_short_axes_and_fits_in_long_ones() -> None:
    assert rules.round_to(61, 61, 8) == 64  # the image axis is no longer: covered
    assert rules.round_to(100, 300, 16) == 96  # nearest multiple
    assert rules.round_to(100, 100, 16) == 112
    assert rules.round_to(3, 200, 8) == 8  # never below one step


def test_patches_shrink_along_the_physically_longest_axis() -> None:
    fp = fingerprint([64, 512, 512], [3.0, 1.0, 1.0])
    shape, why = rules.geometry(
        fp, reference_patch=[32, 64, 64], reference_batch=2, levels=4, machine=CPU
    )
    # 64 x 3 = 192 physically along Z: Y and X are cut first, Z keeps more of its extent.
    assert shape.patch[0] <= 64 and shape.patch[1] == shape.patch[2]
    assert shape.patch[0] * 3 >= 0.5 * shape.patch[1]
    assert shape.patch[1] * shape.patch[2] * shape.patch[0] <= 32 * 64 * 64 * 1.3
    assert shape.strides[0] == [1, 2, 2]
    assert any("cut along" in w for w in why)


def test_a_gpu_gets_larger_patches_and_batches_than_a_cpu() -> None:
    fp = fingerprint([128, 512, 512], [1.0, 1.0, 1.0])
    options = {"reference_patch": [32, 64, 64], "reference_batch": 2, "levels": 4}
    cpu, _ = rules.geometry(fp, machine=CPU, **options)
    gpu, _ = rules.geometry(fp, machine=Machine("cuda", 16, 80.0, "H100"), **options)
    assert _voxels(gpu.patch) * gpu.batch > 4 * _voxels(cpu.patch) * cpu.batch
    assert _voxels(gpu.patch) > _voxels(cpu.patch)
    assert len(gpu.strides) == len(cpu.strides) + 1


def test_a_smaller_patch_gets_a_larger_batch_on_a_cpu() -> None:
    fp = fingerprint([31, 61, 57], [1.0, 1.0, 1.0])
    shape, _ = rules.geometry(
        fp, reference_patch=[64, 128, 128], reference_batch=2, levels=4, machine=CPU
    )
    assert shape.patch == [32, 64, 64]
    assert shape.batch == 8  # 2 x 64 x 128 x 128 voxels per step, at most 8 patches in 3D


def test_normalisation_follows_the_intensities() -> None:
    fluorescence = fingerprint([64, 64], None, p1=0.01, p50=0.05, p99=0.9)
    transmitted = fingerprint([64, 64], None, p1=0.2, p50=0.5, p99=0.8)
    assert rules.normalisation(fluorescence)[0]["name"] == "percentile"
    assert rules.normalisation(transmitted)[0] == {"name": "zscore"}


def test_decoder_limits_follow_the_objects() -> None:
    fp = fingerprint([16, 64, 64], [2.0, 1.0, 1.0])
    objects = Objects(
        count=40,
        per_image=20,
        extent={"Z": [2, 4, 6], "Y": [6, 10, 20], "X": [6, 10, 20]},
        volume=[30.0, 150.0, 900.0],
        foreground=0.05,
        touching=0.6,
    )
    fp.targets["GT"] = Target("GT", "instance", classes=21, objects=objects)
    size, _ = rules.decoder_min_size(fp, 10) or (None, "")
    assert size == 15
    radius, _ = rules.embedding_radius(fp, 8.0) or (None, "")
    assert radius == [2.0, 5.0, 5.0]
    assert rules.foreground_fraction(fp, 0.33) is not None  # 5 % foreground: oversampled


def _voxels(patch: list[int]) -> int:
    total = 1
    for n in patch:
        total *= n
    return total


def test_little_data_get_intensity_augmentations() -> None:
    small = fingerprint([31, 61, 57], [2.5, 1.0, 1.0])  # two stacks: 1.6 patches' worth
    added, why = rules.augmentations(small, [32, 64, 64], ["flip", "rot90", "gaussian_noise"]) or (
        [],
        "",
    )
    assert [a["name"] for a in added] == ["gamma", "contrast", "blur"]
    assert "1.6 patches" in why
    # What the preset has already is not added twice.
    again = rules.augmentations(small, [32, 64, 64], ["gamma", "contrast", "blur"])
    assert again is None
    large = fingerprint([32, 512, 512], [2.0, 1.0, 1.0])
    large.shapes = [[32, 512, 512]] * 12
    assert rules.augmentations(large, [32, 64, 64], ["flip"]) is None


def test_little_data_are_predicted_with_test_time_flips() -> None:
    small = fingerprint([31, 61, 57], [2.5, 1.0, 1.0])  # two stacks: 1.6 patches' worth
    flips, why = rules.test_time_flips(small, [32, 64, 64]) or (False, "")
    assert flips is True
    assert "8 flips" in why and "predict.tta = false" in why
    large = fingerprint([32, 512, 512], [2.0, 1.0, 1.0])
    large.shapes = [[32, 512, 512]] * 12
    assert rules.test_time_flips(large, [32, 64, 64]) is None
    flat = rules.test_time_flips(fingerprint([60, 60], None), [64, 64])
    assert flat is not None and "4 flips" in flat[1]
