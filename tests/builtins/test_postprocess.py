"""Postprocessors on hand-made arrays with known answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from skimage.draw import disk

from bioim2im.builtins import postprocess
from bioim2im.plugin.registry import ComponentRegistry, Registrar


def _registry() -> ComponentRegistry:
    registry = ComponentRegistry()
    postprocess.bioim2im_register_postprocessors(
        Registrar(registry, "postprocessor", "bioim2im", "test")
    )
    return registry


REGISTRY = _registry()


def build(name: str, **params: Any) -> Any:
    return REGISTRY.get("postprocessor", name).build(params, spatial_dims=2)


@pytest.mark.parametrize("name", REGISTRY.names("postprocessor"))
def test_parameters_are_typed(name: str) -> None:
    fields = REGISTRY.get("postprocessor", name).params.model_fields
    assert all(field.annotation is not Any for field in fields.values())


def test_sigmoid() -> None:
    out = build("sigmoid")(np.array([[[0.0, np.log(3.0)]]], dtype=np.float32))
    np.testing.assert_allclose(out, [[[0.5, 0.75]]], rtol=1e-6)


def test_softmax_over_channels() -> None:
    logits = np.log(np.array([[[1.0, 2.0]], [[3.0, 2.0]]]))
    np.testing.assert_allclose(build("softmax")(logits), [[[0.25, 0.5]], [[0.75, 0.5]]])


def test_argmax() -> None:
    scores = np.array([[[0.1, 0.8, 0.3]], [[0.5, 0.1, 0.3]], [[0.4, 0.1, 0.4]]])
    out = build("argmax")(scores)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[[1, 0, 2]]])
    assert build("argmax")(np.zeros((300, 1, 1))).dtype == np.uint16


def test_threshold() -> None:
    out = build("threshold", value=0.3)(np.array([[[0.2, 0.3, 0.9]], [[0.5, 0.0, 1.0]]]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[[0, 0, 1]], [[1, 0, 1]]])


DIAGONAL_SQUARES = np.array(
    [
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 1],
            [0, 0, 0, 0, 1],
        ]
    ],
    dtype=np.uint8,
)


@pytest.mark.parametrize(("connectivity", "count"), [(1, 3), (2, 2)])
def test_connected_components(connectivity: int, count: int) -> None:
    labels = build("connected_components", connectivity=connectivity)(DIAGONAL_SQUARES)
    assert labels.dtype == np.uint32
    assert labels.shape == DIAGONAL_SQUARES.shape
    assert labels.max() == count
    assert set(np.unique(labels[DIAGONAL_SQUARES == 0])) == {0}


def test_connected_components_in_3d() -> None:
    volume = np.zeros((1, 6, 6, 6), dtype=np.uint8)
    volume[0, :2, :2, :2] = 1
    volume[0, 4:, 4:, 4:] = 1
    assert build("connected_components")(volume).max() == 2


def squares(sizes: list[int]) -> np.ndarray:
    """A label image (1, 8, 40) with square objects of the given sides, labelled 1, 2, ..."""
    labels = np.zeros((1, 8, 40), dtype=np.uint16)
    for index, side in enumerate(sizes, start=1):
        start = 10 * (index - 1)
        labels[0, :side, start : start + side] = index
    return labels


def test_remove_small_objects_keeps_label_ids() -> None:
    out = build("remove_small_objects", min_size=5)(squares([2, 3, 4]))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, np.where(squares([2, 3, 4]) == 1, 0, squares([2, 3, 4])))


def test_remove_small_objects_on_a_mask() -> None:
    mask = (squares([2, 3, 4]) > 0).astype(np.uint8)
    out = build("remove_small_objects", min_size=5)(mask)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, (squares([0, 3, 4]) > 0).astype(np.uint8))


def test_size_filter_keeps_objects_between_the_sizes() -> None:
    labels = squares([2, 3, 4])
    out = build("size_filter", min_size=5, max_size=10)(labels)
    np.testing.assert_array_equal(out, np.where(labels == 2, 2, 0))


def ring(size: int = 7) -> np.ndarray:
    image = np.zeros((size, size), dtype=np.uint8)
    image[1:-1, 1:-1] = 1
    image[2:-2, 2:-2] = 0
    return image


def test_fill_holes_in_a_mask() -> None:
    out = build("fill_holes")(ring()[np.newaxis])
    expected = np.zeros((1, 7, 7), dtype=np.uint8)
    expected[0, 1:-1, 1:-1] = 1
    np.testing.assert_array_equal(out, expected)


def test_fill_holes_per_label_leaves_other_labels() -> None:
    labels = np.concatenate([ring() * 3, ring() * 5], axis=1).astype(np.uint32)
    labels[3, 10] = 7  # an object inside label 5's hole
    out = build("fill_holes")(labels[np.newaxis])[0]
    assert out.dtype == np.uint32
    assert (out[2:5, 2:5] == 3).all()
    assert out[3, 10] == 7
    assert (np.delete(out[2:5, 9:12].ravel(), 4) == 5).all()
    assert out[0].sum() == 0


def touching_disks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Foreground probabilities (1, 40, 60) of two overlapping disks, and each disk's mask."""
    left = np.zeros((40, 60), dtype=bool)
    right = np.zeros((40, 60), dtype=bool)
    left[disk((20, 20), 12)] = True
    right[disk((20, 40), 12)] = True
    probabilities = np.where(left | right, 0.9, 0.1)[np.newaxis].astype(np.float32)
    return probabilities, left, right


def assert_two_disks(labels: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
    assert labels.dtype == np.uint32
    assert labels.shape == (1, *left.shape)
    labels = labels[0]
    assert sorted(np.unique(labels)) == [0, 1, 2]
    np.testing.assert_array_equal(labels > 0, left | right)
    # Each disk's centre half lies in one label, different for the two disks.
    left_label = np.unique(labels[20, 12:22])
    right_label = np.unique(labels[20, 38:48])
    assert len(left_label) == len(right_label) == 1
    assert left_label != right_label


@pytest.mark.parametrize("seeds", [{"min_distance": 5}, {"h": 2.0}])
def test_distance_watershed_splits_touching_disks(seeds: dict[str, float]) -> None:
    probabilities, left, right = touching_disks()
    labels = build("watershed", mode="distance", threshold=0.5, **seeds)(probabilities)
    assert_two_disks(labels, left, right)


def test_probability_watershed_grows_seeds_to_the_foreground() -> None:
    probabilities, left, right = touching_disks()
    interiors = np.zeros_like(probabilities)
    interiors[0][disk((20, 20), 6)] = 0.9
    interiors[0][disk((20, 40), 6)] = 0.9
    stacked = np.concatenate([probabilities, interiors])
    labels = build("watershed", mode="probability", fg_channel=0, seed_channel=1)(stacked)
    assert_two_disks(labels, left, right)
