"""Crowded fluorescent nuclei: a hard instance segmentation benchmark close to real DSB2018-style
fluorescence images, with exact ground truth. 2D (YX) or anisotropic 3D (ZYX).

What makes these images hard, each drawn per image or per nucleus from the seed:

- nuclei grow in clusters, most of them touching a neighbour along a shared border, a few
  isolated; they cover about 40 % of the image;
- sizes span 5x (mean radius ``r`` to ``5 r``) within one image;
- brightness varies about 8x across nuclei, and within a nucleus by chromatin texture, dark
  nucleoli and either a bright centre or a bright rim;
- each nucleus is in or out of focus (Gaussian blur of 0.7 to 3 pixels);
- dim, very blurred unlabelled blobs (nuclei of other planes), a sloping and lumpy background
  and uneven illumination;
- Poisson noise of 30 to 300 photons at the brightest level, plus read noise.

In 3D, voxels are ``z_spacing`` times longer along Z than along Y and X (default 2): objects
are drawn in physical units, and the blur is twice as long along Z, as in a widefield stack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from bioim2im.data.drawing import ball_volume, random_rotation, smooth_noise, tidy

Shape = Sequence[int]

COVERAGE = 0.4
"""Fraction of the image the nuclei cover (before the partition into touching objects)."""
SIZE_RANGE = 5.0
"""Largest over smallest mean radius within one image."""
CLUSTERED = 0.65
"""Chance that a new nucleus grows against one already placed rather than on its own."""
FOCUS_BLUR = (0.7, 1.5, 3.0)
FOCUS_CHANCE = (0.55, 0.3, 0.15)
"""Blur (pixels, std) of in-focus, slightly and badly out-of-focus nuclei, and their chances."""


def crowded_nuclei(
    shape: Shape, *, seed: int = 0, min_radius: float | None = None, z_spacing: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence image of crowded nuclei (float32, about [0, 1]) and its instance labels
    1..N (uint16, 0 = background).

    ``min_radius`` (pixels along Y/X) is the smallest mean radius, default 1/48 of the smaller of
    Y and X, at least 3; the largest is 5 times that. ``z_spacing`` applies to 3D shapes.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be 2D (Y, X) or 3D (Z, Y, X), got {shape}")
    if z_spacing <= 0:
        raise ValueError(f"z_spacing must be positive, got {z_spacing}")
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    spacing = np.array((z_spacing, 1.0, 1.0)[-ndim:])
    low = min_radius if min_radius is not None else max(3.0, min(shape[-2:]) / 48)
    if low <= 0:
        raise ValueError(f"min_radius must be positive, got {min_radius}")
    centers, radii = _clusters(rng, np.array(shape) * spacing, low, low * SIZE_RANGE)
    labels, depth = _partition(rng, shape, spacing, centers, radii, low)
    signal = _stain(rng, labels, depth, low)
    image = _optics(rng, labels, signal, spacing, low, low * SIZE_RANGE)
    return image, labels


def _clusters(
    rng: np.random.Generator, extent: np.ndarray, low: float, high: float
) -> tuple[list[np.ndarray], list[float]]:
    """Centres and radii (physical units): clusters of touching nuclei and a few loners."""
    ndim = len(extent)
    target = COVERAGE * math.prod(extent)
    centers: list[np.ndarray] = []
    radii: list[float] = []
    covered, attempts = 0.0, 0
    while covered < target and attempts < 20000:
        attempts += 1
        # Log-uniform sizes: as many small nuclei as large ones per octave.
        r = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        if centers and rng.random() < CLUSTERED:
            # Against a random earlier nucleus, slightly closer than touching: the overlap
            # becomes a shared border when the image is partitioned.
            partner = int(rng.integers(len(centers)))
            direction = rng.normal(size=ndim)
            direction /= np.linalg.norm(direction)
            center = centers[partner] + direction * rng.uniform(0.8, 0.95) * (radii[partner] + r)
        else:
            center = rng.uniform(0, extent)
        if np.any(center < -0.5 * r) or np.any(center > extent + 0.5 * r):
            continue
        # Neighbours may overlap a little (they will touch), never pile up.
        if any(
            np.linalg.norm(center - c) < 0.75 * (r + q) for c, q in zip(centers, radii, strict=True)
        ):
            continue
        centers.append(center)
        radii.append(r)
        covered += ball_volume(r, ndim)
    return centers, radii


def _partition(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: np.ndarray,
    centers: list[np.ndarray],
    radii: list[float],
    low: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (each voxel to the nucleus it is deepest inside) and that depth (0 centre, 1 rim)."""
    ndim = len(shape)
    wobble = 1 + 0.08 * np.clip(smooth_noise(rng, shape, 2 * low), -2, 2)
    upper = np.array(shape) - 1
    depth = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint16)
    for label, (center, r) in enumerate(zip(centers, radii, strict=True), start=1):
        semi_axes = r * rng.uniform(0.7, 1.3, size=ndim)
        rotation = random_rotation(rng, ndim)
        reach = 1.3 * semi_axes.max()
        box = tuple(
            slice(max(0, math.floor((c - reach) / s)), min(n, math.ceil((c + reach) / s) + 1))
            for c, s, n in zip(center, spacing, shape, strict=True)
        )
        if any(b.stop <= b.start for b in box):
            continue
        grid = np.stack(
            np.meshgrid(*(np.arange(b.start, b.stop) for b in box), indexing="ij"), axis=-1
        )
        offset = grid * spacing - center
        distance = np.sqrt((((offset @ rotation) / semi_axes) ** 2).sum(axis=-1))
        # Where each ray from the centre crosses the outline decides the wobble: star-shaped.
        rim = (center + offset / np.maximum(distance, 1e-6)[..., None]) / spacing
        rim = np.clip(np.rint(rim), 0, upper).astype(np.intp)
        distance = distance / wobble[tuple(np.moveaxis(rim, -1, 0))]
        inside = (distance < 1) & (distance < depth[box])
        depth[box][inside] = distance[inside]
        labels[box][inside] = label
    labels = tidy(labels, min_size=0.3 * ball_volume(low, ndim) / math.prod(spacing))
    depth[labels == 0] = 1.0
    return labels, np.minimum(depth, 1.0)


def _stain(
    rng: np.random.Generator, labels: np.ndarray, depth: np.ndarray, low: float
) -> np.ndarray:
    """The DNA stain of each nucleus before the optics: brightness, texture, nucleoli, profile."""
    n = int(labels.max())
    shape = labels.shape
    # About 8x between the dimmest and the brightest nucleus.
    brightness = np.concatenate([[0.0], np.exp(rng.uniform(np.log(0.15), 0.0, size=n))])
    chromatin = 1 + 0.3 * smooth_noise(rng, shape, low / 3) + 0.12 * smooth_noise(rng, shape, 1)
    nucleoli = np.clip(smooth_noise(rng, shape, low / 2) - 1.6, 0, None)
    # Half the nuclei are brightest at the centre, the others along their rim.
    rim_bright = np.concatenate([[False], rng.random(n) < 0.5])[labels]
    profile = np.where(rim_bright, 0.65 + 0.35 * depth**2, 1 - 0.4 * depth**2)
    stain = brightness[labels] * profile * np.clip(chromatin - 0.8 * nucleoli, 0.1, None)
    return np.where(labels > 0, stain, 0).astype(np.float32)


def _optics(
    rng: np.random.Generator,
    labels: np.ndarray,
    stain: np.ndarray,
    spacing: np.ndarray,
    low: float,
    high: float,
) -> np.ndarray:
    """Focus per nucleus, ghosts of other planes, background, illumination, camera noise."""
    shape = labels.shape
    ndim = len(shape)
    n = int(labels.max())
    # Blur per axis in voxels: physical std (twice as long along Z) over the voxel size.
    elongation = np.array((2.0, 1.0, 1.0)[-ndim:])
    focus = np.concatenate([[0], rng.choice(len(FOCUS_BLUR), size=n, p=FOCUS_CHANCE)])[labels]
    image = np.zeros(shape, dtype=np.float32)
    for level, blur in enumerate(FOCUS_BLUR):
        part = np.where((labels > 0) & (focus == level), stain, 0)
        image += ndimage.gaussian_filter(part, blur * elongation / spacing)
    # Nuclei of other planes: dim, wide, unlabelled blobs.
    ghosts = np.zeros(shape, dtype=np.float32)
    for _ in range(max(1, n // 8)):
        center = tuple(int(rng.integers(0, s)) for s in shape)
        ghosts[center] = rng.uniform(0.03, 0.15)
    ghost_blur = rng.uniform(0.4, 0.7) * high * elongation / spacing
    ghosts = ndimage.gaussian_filter(ghosts, ghost_blur) * math.prod(
        float(np.sqrt(2 * np.pi)) * b for b in ghost_blur
    )
    # A sloping, lumpy background and illumination falling off across the field.
    direction = rng.normal(size=ndim)
    span = np.maximum(np.array(shape) - 1, 1).reshape(-1, *[1] * ndim)
    ramp = np.tensordot(direction / np.linalg.norm(direction), np.indices(shape) / span - 0.5, 1)
    background = (
        rng.uniform(0.02, 0.12)
        + rng.uniform(0.0, 0.12) * ramp
        + 0.02 * smooth_noise(rng, shape, max(shape) / 4)
    )
    illumination = 1 + 0.25 * smooth_noise(rng, shape, max(shape) / 2)
    clean = np.clip((image + ghosts) * illumination + background, 0, None)
    clean /= max(float(np.percentile(clean, 99.9)), 1e-6)
    photons = float(np.exp(rng.uniform(np.log(30.0), np.log(300.0))))
    counts = rng.poisson(clean.astype(np.float64) * photons) / photons
    noisy = counts + rng.normal(0.0, rng.uniform(0.005, 0.02), size=shape)
    return noisy.astype(np.float32)
