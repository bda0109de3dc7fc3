"""The crowded-nuclei benchmark images: what makes them hard is really there."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bioim2im.data.crowded import SIZE_RANGE, crowded_nuclei
from bioim2im.data.synthetic import write_dataset
from bioim2im.io.tiff import open_tiff


def touching(labels: np.ndarray) -> set[int]:
    """Objects with a face-adjacent voxel of another object."""
    found: set[int] = set()
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)[:-1].ravel()
        b = np.moveaxis(labels, axis, 0)[1:].ravel()
        pair = (a > 0) & (b > 0) & (a != b)
        found |= set(a[pair].tolist()) | set(b[pair].tolist())
    return found


@pytest.mark.parametrize("shape", [(192, 192), (24, 96, 96)])
def test_labels_are_solid_objects_most_of_them_touching(shape: tuple[int, ...]) -> None:
    image, labels = crowded_nuclei(shape, seed=0)
    assert image.shape == labels.shape == shape
    assert (image.dtype, labels.dtype) == (np.float32, np.uint16)
    n = int(labels.max())
    assert n >= 20
    np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))
    pieces = [ndimage.label(labels[box] == i)[1] for i, box in enumerate(
        ndimage.find_objects(labels), start=1)]  # fmt: skip
    assert max(pieces) == 1
    # Clustered: most nuclei touch a neighbour; they cover a good part of the image.
    assert len(touching(labels)) > 0.5 * n
    assert 0.2 < (labels > 0).mean() < 0.6


def test_sizes_and_brightnesses_vary_widely() -> None:
    image, labels = crowded_nuclei((256, 256), seed=1)
    areas = np.bincount(labels.ravel())[1:]
    whole = areas[areas > 0]
    radii = np.sqrt(whole / np.pi)
    assert np.percentile(radii, 95) > 0.5 * SIZE_RANGE * np.percentile(radii, 5)
    brightness = ndimage.median(image, labels, np.arange(1, labels.max() + 1))
    assert np.percentile(brightness, 90) > 2 * np.percentile(brightness, 10)
    # Dim nuclei are barely above the background: no single threshold finds them all.
    background = np.percentile(image[labels == 0], 90)
    assert (brightness < background).any()


def test_3d_objects_are_drawn_in_physical_units() -> None:
    """Voxels twice as long along Z: a nucleus spans about half as many voxels along Z."""
    _, labels = crowded_nuclei((40, 128, 128), seed=2, min_radius=6.0)
    extents = np.array(
        [[s.stop - s.start for s in box] for box in ndimage.find_objects(labels) if box]
    )
    inside = (extents[:, 0] < 30) & (extents[:, 1] < 100)
    ratio = np.median(extents[inside, 0] / extents[inside, 1:].mean(axis=1))
    assert 0.35 < ratio < 0.75


def test_deterministic_and_written_as_a_dataset(tmp_path) -> None:
    a = crowded_nuclei((64, 64), seed=5)
    b = crowded_nuclei((64, 64), seed=5)
    c = crowded_nuclei((64, 64), seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])
    root = write_dataset(tmp_path, kind="crowded_nuclei", n_images=2, shape=(8, 32, 32))
    stored = open_tiff(root / "GT" / "img_001.tif")
    assert stored.voxel_size == (2.0, 1.0, 1.0)
    assert stored.read().max() > 0
