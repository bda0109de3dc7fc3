"""What the synthetic images are drawn with (:mod:`bioim2im.data.synthetic`,
:mod:`bioim2im.data.crowded`): smooth random fields, random rotations, and label maps tidied
into one solid piece per object."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential
from skimage.transform import resize

Shape = Sequence[int]


def random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """A uniformly random rotation (or reflection) matrix of ``ndim`` x ``ndim``."""
    q, r = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    return q * np.sign(np.diag(r))


def smooth_noise(rng: np.random.Generator, shape: Shape, length: float) -> np.ndarray:
    """Gaussian noise with unit std correlated over about ``length`` pixels (float32)."""
    if length <= 4:
        field = ndimage.gaussian_filter(rng.normal(size=tuple(shape)), length / 2)
    else:
        # Interpolating a coarse grid is much cheaper than blurring with a kernel this wide;
        # a small blur then rounds off the corners of the linear interpolation.
        coarse = tuple(max(2, math.ceil(n / length) + 1) for n in shape)
        field = resize(
            rng.normal(size=coarse), tuple(shape), order=1, mode="reflect", anti_aliasing=False
        )
        field = ndimage.gaussian_filter(field, 2.0)
    field -= field.mean()
    return (field / max(float(field.std()), 1e-6)).astype(np.float32)


def tidy(labels: np.ndarray, min_size: float) -> np.ndarray:
    """One solid piece per object, none smaller than ``min_size`` pixels, labels 1..N.

    Where neighbours cut an object in pieces only its largest piece stays; background left
    enclosed by a single object is filled in.
    """
    kept = np.zeros_like(labels)
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        pieces, _ = ndimage.label(labels[box] == label)
        largest = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
        if largest.sum() >= min_size:
            kept[box][largest] = label
    gaps, _ = ndimage.label(kept == 0)
    for gap, box in enumerate(ndimage.find_objects(gaps), start=1):
        if any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape, strict=True)):
            continue  # open to the image border: not enclosed
        around = tuple(slice(s.start - 1, s.stop + 1) for s in box)
        inside = gaps[around] == gap
        neighbours = np.unique(kept[around][ndimage.binary_dilation(inside) & ~inside])
        if len(neighbours) == 1:
            kept[around][inside] = neighbours[0]
    return relabel_sequential(kept)[0].astype(np.uint16)


def ball_volume(radius: float, ndim: int) -> float:
    """The area (2D) or volume (3D) of a disc or ball of ``radius``."""
    return math.pi * radius**2 * (4 / 3 * radius if ndim == 3 else 1)
