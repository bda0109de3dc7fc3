"""Synthetic data: shapes, determinism, label sanity, realism checks, dataset layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio

from bioim2im.data import synthetic
from bioim2im.io.tiff import open_tiff

SHAPES = [(96, 128), (16, 48, 48)]


def touching_pairs(instances: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different objects with face-adjacent pixels."""
    pairs = set()
    for axis in range(instances.ndim):
        a = np.moveaxis(instances, axis, 0)[:-1].ravel()
        b = np.moveaxis(instances, axis, 0)[1:].ravel()
        touching = (a > 0) & (b > 0) & (a != b)
        pairs |= {tuple(sorted(p)) for p in zip(a[touching], b[touching], strict=True)}
    return pairs


@pytest.mark.parametrize("shape", SHAPES)
def test_nuclei_shapes_dtypes_and_labels(shape: tuple[int, ...]) -> None:
    image, instances = synthetic.nuclei(shape, seed=1)
    assert image.shape == instances.shape == shape
    assert (image.dtype, instances.dtype) == (np.float32, np.uint16)
    assert image.min() > -0.3
    assert image.max() < 1.5
    n = int(instances.max())
    assert n >= 5
    np.testing.assert_array_equal(np.unique(instances), np.arange(n + 1))  # labels 1..N, no gaps
    for label in range(1, n + 1):
        assert ndimage.label(instances == label)[1] == 1  # each nucleus is one piece
    foreground = image[instances > 0].mean()
    assert foreground > image[instances == 0].mean() + 0.15


@pytest.mark.parametrize("shape", SHAPES)
def test_some_nuclei_touch(shape: tuple[int, ...]) -> None:
    _, instances = synthetic.nuclei(shape, seed=2)
    assert len(touching_pairs(instances)) >= 2


def test_nuclei_count_and_size_are_controllable() -> None:
    _, few = synthetic.nuclei((128, 128), n_objects=4, radius=(8, 10), seed=0)
    assert 1 <= few.max() <= 4
    areas = np.bincount(few.ravel())[1:]
    assert areas.max() < np.pi * (10 * 1.25 * 1.35) ** 2
    _, many = synthetic.nuclei((128, 128), radius=(3, 4), seed=0)
    assert many.max() > 3 * few.max()


def test_generators_are_deterministic() -> None:
    for make in (
        lambda seed: synthetic.nuclei((64, 64), seed=seed),
        lambda seed: synthetic.labelfree_pair((64, 64), seed=seed),
        lambda seed: synthetic.restoration_pair((64, 64), seed=seed),
    ):
        first, second, other = make(7), make(7), make(8)
        for a, b, c in zip(first, second, other, strict=True):
            np.testing.assert_array_equal(a, b)
            assert not np.array_equal(a, c)


def test_semantic_and_boundary_classes() -> None:
    _, instances = synthetic.nuclei((96, 96), seed=3)
    semantic = synthetic.semantic_from_instances(instances)
    assert semantic.dtype == np.uint8
    np.testing.assert_array_equal(semantic, instances > 0)
    classes = synthetic.boundary_classes(instances)
    assert set(np.unique(classes)) == {0, 1, 2}
    np.testing.assert_array_equal(classes > 0, instances > 0)
    # Where two nuclei touch, both sides are boundary.
    a, b = next(iter(touching_pairs(instances)))
    touching = (instances == a) & ndimage.binary_dilation(instances == b)
    assert (classes[touching] == 2).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_labelfree_pair_is_related_but_different(shape: tuple[int, ...]) -> None:
    transmitted, fluorescence = synthetic.labelfree_pair(shape, seed=4)
    assert transmitted.shape == fluorescence.shape == shape
    assert transmitted.dtype == fluorescence.dtype == np.float32
    correlation = np.corrcoef(transmitted.ravel(), fluorescence.ravel())[0, 1]
    assert 0.1 < abs(correlation) < 0.9
    # The target is noiseless: smoother than the transmitted image.
    roughness = [np.abs(np.diff(x, axis=-1)).mean() / x.std() for x in (transmitted, fluorescence)]
    assert roughness[0] > roughness[1]


def test_restoration_pair_noise_level() -> None:
    psnr = {}
    for level in (0.05, 0.2, 0.5):
        noisy, clean = synthetic.restoration_pair((96, 96), seed=5, noise_level=level)
        assert noisy.dtype == clean.dtype == np.float32
        psnr[level] = peak_signal_noise_ratio(clean, noisy, data_range=1.0)
    assert psnr[0.05] > psnr[0.2] + 6 > psnr[0.5] + 12
    assert 20 < psnr[0.05] < 40
    _, clean_again = synthetic.restoration_pair((96, 96), seed=5, noise_level=0.05)
    np.testing.assert_array_equal(clean, clean_again)  # the noise level changes only the noise


def test_write_dataset_folders(tmp_path: Path) -> None:
    root = synthetic.write_dataset(
        tmp_path / "d", kind="nuclei", n_images=8, shape=(256, 256), seed=0
    )
    names = [f"img_{i:03d}.tif" for i in range(8)]
    assert sorted(p.name for p in (root / "IM").iterdir()) == names
    assert sorted(p.name for p in (root / "GT").iterdir()) == names
    image, labels = open_tiff(root / "IM" / names[0]), open_tiff(root / "GT" / names[0])
    assert (image.axes, image.dtype, image.shape) == ("YX", np.float32, (256, 256))
    assert (labels.axes, labels.dtype) == ("YX", np.uint16)
    assert labels.read().max() > 3
    again = synthetic.write_dataset(
        tmp_path / "e", kind="nuclei", n_images=2, shape=(256, 256), seed=0
    )
    np.testing.assert_array_equal(
        open_tiff(again / "IM" / names[1]).read(), open_tiff(root / "IM" / names[1]).read()
    )


@pytest.mark.parametrize(
    ("kind", "label_kind", "target_dtype"),
    [
        ("nuclei", "semantic", np.uint8),
        ("nuclei", "boundary", np.uint8),
        ("labelfree", "instance", np.float32),
        ("restoration", "instance", np.float32),
    ],
)
def test_write_dataset_pairs(
    tmp_path: Path, kind: str, label_kind: str, target_dtype: type
) -> None:
    root = synthetic.write_dataset(
        tmp_path,
        kind=kind,
        n_images=2,
        shape=(8, 32, 32),
        seed=1,
        layout="pairs",
        label_kind=label_kind,  # type: ignore[arg-type]
    )
    assert sorted(p.name for p in root.iterdir()) == [
        "img_000_GT.tif",
        "img_000_IM.tif",
        "img_001_GT.tif",
        "img_001_IM.tif",
    ]
    target = open_tiff(root / "img_001_GT.tif")
    assert (target.axes, target.dtype, target.shape) == ("ZYX", target_dtype, (8, 32, 32))
    if label_kind == "boundary":
        assert set(np.unique(target.read())) == {0, 1, 2}


def test_write_dataset_rejects_label_kind_for_image_targets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label_kind applies to kind='nuclei' only"):
        synthetic.write_dataset(
            tmp_path, kind="labelfree", n_images=1, shape=(32, 32), label_kind="semantic"
        )
