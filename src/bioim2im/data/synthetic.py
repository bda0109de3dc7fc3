"""Synthetic microscopy images with exact ground truth, for tests, demos and quick checks.

Everything is deterministic given ``seed`` and works for 2D (YX) and 3D (ZYX) shapes.

- :func:`nuclei`: fluorescent nuclei (blobby ellipsoids, some touching in pairs, textured,
  unevenly lit, blurred, with Poisson-Gaussian noise) and their instance labels.
- :func:`labelfree_pair`: a phase-contrast-like transmitted-light image of cells and the
  noiseless nuclear fluorescence to predict from it.
- :func:`restoration_pair`: a noisy acquisition and its noiseless counterpart.
- :func:`superres_pair`: a volume seen with coarser voxels, and the volume itself.
- :func:`multitask_sample`: a transmitted-light volume with a nuclear mask, the nuclear
  fluorescence and its maximum projection.
- :func:`write_dataset`: many of these as TIFF files in a training folder layout.

Images are float32, roughly in [0, 1]; labels are uint16 (instances) or uint8 (classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.segmentation import expand_labels, find_boundaries

from bioim2im.data.drawing import ball_volume, random_rotation, smooth_noise, tidy
from bioim2im.io.tiff import write_tiff

Shape = Sequence[int]

# Fraction of the image the nuclei cover, when their number is not given.
_COVERAGE = 0.25
# Fraction of nuclei placed against a partner, so that touching pairs exist to be separated.
_PAIRED = 0.35


def nuclei(
    shape: Shape,
    *,
    n_objects: int | None = None,
    radius: tuple[float, float] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A noisy fluorescence image of nuclei and their instance labels 1..N (0 = background).

    ``radius`` is the (min, max) mean radius in pixels; default: 1/32 to 1/14 of the smaller of
    Y and X (at least 3 pixels). ``n_objects`` defaults to covering about a quarter of the image.
    """
    rng = np.random.default_rng(seed)
    clean, instances = _nuclei_clean(rng, shape, n_objects, radius)
    return _acquire(rng, clean, photons=200.0, read_noise=0.02), instances


def labelfree_pair(shape: Shape, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(transmitted, fluorescence): a phase-contrast-like image of cells, and its nuclei.

    The transmitted image shows whole cells with halos at their edges and only faint nuclei, at
    low contrast, unevenly lit and noisy; the fluorescence target is the noiseless nuclear stain
    of the same cells, so predicting it means finding nuclei inside cells.
    """
    transmitted, fluorescence, _ = _labelfree(np.random.default_rng(seed), shape)
    return transmitted, fluorescence


def _labelfree(rng: np.random.Generator, shape: Shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transmitted, fluorescence, nuclei instance labels) of :func:`labelfree_pair`."""
    fluorescence, instances = _nuclei_clean(rng, shape, None, None)
    r = _radius_range(shape, None)[1]
    cells = expand_labels(instances, distance=0.8 * r) > 0
    # Optical path length: thick where cells are, a bit more through nuclei, with texture.
    thickness = ndimage.gaussian_filter(cells.astype(np.float32), r / 4)
    thickness += 0.4 * ndimage.gaussian_filter((instances > 0).astype(np.float32), r / 8)
    thickness *= 1 + 0.1 * smooth_noise(rng, shape, r / 3)
    # Phase contrast sees differences of optical path: a high-pass gives dark cells with halos.
    phase = thickness - ndimage.gaussian_filter(thickness, 2 * r)
    relief = ndimage.sobel(ndimage.gaussian_filter(thickness, 1.0), axis=-1)
    transmitted = 0.5 - 0.25 * phase + 0.1 * relief
    transmitted *= 1 + 0.1 * smooth_noise(rng, shape, max(shape) / 2)
    transmitted += rng.normal(0.0, 0.02, size=transmitted.shape)
    return transmitted.astype(np.float32), fluorescence, instances


def restoration_pair(
    shape: Shape, *, seed: int = 0, noise_level: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) nuclei images; ``noise_level`` is the noise std where the image is brightest.

    The noise is Poisson (shot noise, ``1 / noise_level**2`` photons at the brightest pixel)
    plus Gaussian read noise of half that std.
    """
    if noise_level <= 0:
        raise ValueError(f"noise_level must be positive, got {noise_level}")
    rng = np.random.default_rng(seed)
    clean, _ = _nuclei_clean(rng, shape, None, None)
    noisy = _acquire(rng, clean, photons=1 / noise_level**2, read_noise=noise_level / 2)
    return noisy, clean


def superres_pair(
    shape: Shape, *, scale: int | Sequence[int] = 2, seed: int = 0, noise_level: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(coarse, fine): a noisy acquisition with voxels ``scale`` times larger (per axis, or one
    factor for all), and the noiseless nuclei image of ``shape``. Each coarse voxel is the mean
    of the fine voxels it covers, plus Gaussian noise of std ``noise_level``."""
    factors = _factors(scale, len(shape))
    if any(n % f for n, f in zip(shape, factors, strict=True)):
        raise ValueError(f"shape {tuple(shape)} must be divisible by the scale {factors}")
    rng = np.random.default_rng(seed)
    # Sharper than the default (whose blur is longer along Z): fine detail on every axis.
    fine, _ = _nuclei_clean(rng, shape, None, None, psf_sigma=1.0)
    blocks = [d for n, f in zip(shape, factors, strict=True) for d in (n // f, f)]
    coarse = fine.reshape(blocks).mean(axis=tuple(range(1, len(blocks), 2)))
    coarse += rng.normal(0.0, noise_level, size=coarse.shape)
    return coarse.astype(np.float32), fine


def multitask_sample(shape: Shape, *, seed: int = 0) -> dict[str, np.ndarray]:
    """One sample for a multi-task model, named by folder: ``IM`` a transmitted-light volume
    (ZYX, as :func:`labelfree_pair`), ``GT`` its nuclear mask (uint8 0/1), ``FLUO`` the nuclear
    fluorescence and ``MIP`` that fluorescence's maximum projection along Z (YX)."""
    if len(shape) != 3:
        raise ValueError(f"a multi-task sample is a 3D volume (Z, Y, X), got shape {tuple(shape)}")
    transmitted, fluorescence, instances = _labelfree(np.random.default_rng(seed), shape)
    return {
        "IM": transmitted,
        "GT": semantic_from_instances(instances),
        "FLUO": fluorescence,
        "MIP": fluorescence.max(axis=0),
    }


def _factors(scale: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    factors = (scale,) * ndim if isinstance(scale, int) else tuple(scale)
    if len(factors) != ndim or any(int(f) != f or f < 1 for f in factors):
        raise ValueError(f"scale must be a positive integer or {ndim} of them, got {scale}")
    return tuple(int(f) for f in factors)


def semantic_from_instances(instances: np.ndarray) -> np.ndarray:
    """Foreground mask: 1 where there is an object, 0 elsewhere (uint8)."""
    return (instances > 0).astype(np.uint8)


def boundary_classes(instances: np.ndarray) -> np.ndarray:
    """Three classes: 0 background, 1 object interior, 2 object boundary (uint8).

    Boundary pixels are the objects' own outermost pixels, so touching objects stay apart.
    """
    classes = semantic_from_instances(instances)
    classes[find_boundaries(instances, mode="inner")] = 2
    return classes


def write_dataset(
    root: str | Path,
    *,
    kind: Literal["nuclei", "crowded_nuclei", "labelfree", "restoration", "superres", "multitask"],
    n_images: int,
    shape: Shape,
    seed: int = 0,
    layout: Literal["folders", "pairs"] = "folders",
    label_kind: Literal["instance", "semantic", "boundary"] = "instance",
    scale: int | Sequence[int] = 2,
) -> Path:
    """Write ``n_images`` input/target pairs as OME-TIFF files and return ``root``.

    Layout ``"folders"``: ``root/IM/img_000.tif`` and ``root/GT/img_000.tif``; layout ``"pairs"``:
    ``root/img_000_IM.tif`` and ``root/img_000_GT.tif``. Inputs are float32. Targets are, for
    ``crowded_nuclei`` (:func:`bioim2im.data.crowded.crowded_nuclei`: a hard instance
    segmentation benchmark; 3D voxels twice as long along Z, recorded), uint16 instance labels;
    for ``nuclei``, uint16 instance labels, a uint8 0/1 mask (``semantic``) or uint8 classes 0/1/2
    (``boundary``); for ``labelfree`` and ``restoration``, float32 images. ``label_kind`` applies
    to ``nuclei`` only. ``superres`` targets have ``shape`` and the inputs ``shape / scale``
    (with voxel sizes ``scale`` and 1 recorded). ``multitask`` (3D) writes the four images of
    :func:`multitask_sample` (IM, GT, FLUO, MIP). Each image has its own seed derived from ``seed``.
    """
    kinds = ("nuclei", "crowded_nuclei", "labelfree", "restoration", "superres", "multitask")
    if kind not in kinds:
        raise ValueError(f"unknown kind {kind!r}; use {', '.join(kinds)}")
    if kind != "nuclei" and label_kind != "instance":
        raise ValueError(f"label_kind applies to kind='nuclei' only, not {kind!r}")
    root = Path(root)
    axes = "ZYX" if len(shape) == 3 else "YX"
    digits = max(3, len(str(n_images - 1)))
    seeds = np.random.SeedSequence(seed).generate_state(n_images)
    voxel_sizes: dict[str, Sequence[float] | None] = {}
    if kind == "crowded_nuclei" and len(shape) == 3:
        voxel_sizes = {"IM": [2.0, 1.0, 1.0], "GT": [2.0, 1.0, 1.0]}
    if kind == "superres":
        voxel_sizes = {
            "IM": [float(f) for f in _factors(scale, len(shape))],
            "GT": [1.0] * len(shape),
        }
    for i, image_seed in enumerate(seeds):
        if kind == "nuclei":
            image, instances = nuclei(shape, seed=int(image_seed))
            target = {
                "instance": instances,
                "semantic": semantic_from_instances(instances),
                "boundary": boundary_classes(instances),
            }[label_kind]
            images = {"IM": image, "GT": target}
        elif kind == "crowded_nuclei":
            from bioim2im.data.crowded import crowded_nuclei

            images = dict(
                zip(("IM", "GT"), crowded_nuclei(shape, seed=int(image_seed)), strict=True)
            )
        elif kind == "labelfree":
            images = dict(
                zip(("IM", "GT"), labelfree_pair(shape, seed=int(image_seed)), strict=True)
            )
        elif kind == "restoration":
            images = dict(
                zip(("IM", "GT"), restoration_pair(shape, seed=int(image_seed)), strict=True)
            )
        elif kind == "superres":
            pair = superres_pair(shape, scale=scale, seed=int(image_seed))
            images = dict(zip(("IM", "GT"), pair, strict=True))
        else:
            images = multitask_sample(shape, seed=int(image_seed))
        stem = f"img_{i:0{digits}d}"
        for role, array in images.items():
            path = (
                root / role / f"{stem}.tif" if layout == "folders" else root / f"{stem}_{role}.tif"
            )
            write_tiff(
                path,
                array,
                axes=axes[-array.ndim :],
                voxel_size=voxel_sizes.get(role),
                compression="none",
            )
    return root


def _radius_range(shape: Shape, radius: tuple[float, float] | None) -> tuple[float, float]:
    if radius is not None:
        low, high = radius
        if not 0 < low <= high:
            raise ValueError(f"radius must be (min, max) with 0 < min <= max, got {radius}")
        return float(low), float(high)
    size = min(shape[-2:])
    low = max(3.0, size / 32)
    return low, max(low + 1.0, size / 14)


def _nuclei_clean(
    rng: np.random.Generator,
    shape: Shape,
    n_objects: int | None,
    radius: tuple[float, float] | None,
    psf_sigma: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless blurred fluorescence in [0, 1] (float32) and instance labels (uint16).

    The blur is Gaussian with std ``psf_sigma`` pixels, default one longer along Z (1.5, 1, 1).
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be 2D (Y, X) or 3D (Z, Y, X), got {shape}")
    low, high = _radius_range(shape, radius)
    ndim = len(shape)
    if n_objects is None:
        n_objects = max(
            1, round(_COVERAGE * math.prod(shape) / ball_volume((low + high) / 2, ndim))
        )
    centers, radii = _place(rng, shape, n_objects, low, high)

    # Each pixel belongs to the nucleus whose (wobbly) ellipsoid it is deepest inside: the
    # labels are a partition, and overlapping pairs end up touching along a shared border.
    wobble = 1 + 0.15 * np.clip(smooth_noise(rng, shape, low), -2, 2)
    upper = np.array(shape) - 1
    depth = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint16)
    for label, (center, r) in enumerate(zip(centers, radii, strict=True), start=1):
        semi_axes = r * rng.uniform(0.75, 1.25, size=ndim)
        rotation = random_rotation(rng, ndim)
        box = tuple(
            slice(
                max(0, math.floor(c - 1.4 * semi_axes.max())),
                min(n, math.ceil(c + 1.4 * semi_axes.max()) + 1),
            )
            for c, n in zip(center, shape, strict=True)
        )
        grid = np.stack(
            np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij"), axis=-1
        )
        local = (grid - center) @ rotation / semi_axes
        distance = np.sqrt((local**2).sum(axis=-1))
        # The outline wobbles by where each ray from the centre crosses the ellipsoid, which
        # keeps nuclei star-shaped: no holes, no detached bits.
        rim = center + (grid - center) / np.maximum(distance, 1e-6)[..., None]
        rim = np.clip(np.rint(rim), 0, upper).astype(np.intp)
        distance = distance / wobble[tuple(np.moveaxis(rim, -1, 0))]
        inside = (distance < 1) & (distance < depth[box])
        depth[box][inside] = distance[inside]
        labels[box][inside] = label
    labels = tidy(labels, min_size=0.3 * ball_volume(low, ndim))

    brightness = np.concatenate([[0.0], rng.uniform(0.45, 1.0, size=int(labels.max()))])
    texture = 1 + 0.25 * smooth_noise(rng, shape, low / 2) + 0.1 * smooth_noise(rng, shape, 1.0)
    # Brighter centres, dimmer rims: the look of a rounded nucleus seen through a widefield.
    profile = np.where(labels > 0, 1 - 0.35 * np.minimum(depth, 1) ** 2, 0)
    signal = brightness[labels] * profile * texture
    illumination = 1 + 0.2 * smooth_noise(rng, shape, max(shape) / 2)
    background = 0.05 + 0.02 * smooth_noise(rng, shape, max(shape) / 3)
    # A point spread function longer along Z, unless one is given.
    sigma = (1.5, 1.0, 1.0)[-ndim:] if psf_sigma is None else psf_sigma
    image = ndimage.gaussian_filter(signal * illumination + background, sigma)
    image = np.clip(image, 0, None) / max(float(image.max()), 1e-6)
    return image.astype(np.float32), labels


def _place(
    rng: np.random.Generator, shape: tuple[int, ...], n: int, low: float, high: float
) -> tuple[list[np.ndarray], list[float]]:
    """Centres and radii: scattered without much overlap, a fraction of them in touching pairs."""
    centers: list[np.ndarray] = []
    radii: list[float] = []
    extent = np.array(shape, dtype=float)
    attempts = 0
    while len(centers) < n and attempts < 50 * n:
        attempts += 1
        r = float(rng.uniform(low, high))
        if centers and len(centers) < n - 1 and rng.random() < _PAIRED:
            # A partner at slightly less than touching distance from the last nucleus.
            direction = rng.normal(size=len(shape))
            direction /= np.linalg.norm(direction)
            center = centers[-1] + direction * 0.85 * (radii[-1] + r)
            if np.any(center < 0) or np.any(center >= extent):
                continue
            centers.append(center)
            radii.append(r)
            continue
        center = rng.uniform(0, extent)
        if all(
            np.linalg.norm(center - c) > 1.1 * (r + q) for c, q in zip(centers, radii, strict=True)
        ):
            centers.append(center)
            radii.append(r)
    return centers, radii


def _acquire(
    rng: np.random.Generator, clean: np.ndarray, *, photons: float, read_noise: float
) -> np.ndarray:
    """``clean`` (brightest = 1) seen by a camera: shot noise at ``photons`` plus read noise."""
    counts = rng.poisson(clean.astype(np.float64) * photons) / photons
    return (counts + rng.normal(0.0, read_noise, size=clean.shape)).astype(np.float32)
