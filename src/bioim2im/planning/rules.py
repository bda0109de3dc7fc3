"""The planning rules: a data fingerprint and a machine in, the preset values that fit them out,
each with the reason that is written next to it.

These functions are pure (no torch, no files): :mod:`bioim2im.planning.plan` measures the
machine and puts them together. What each choice is derived from:

- **resampling**: only when images differ in voxel size (to their median); anisotropic data
  keep their grid (upsampling a coarse Z invents voxels and multiplies the cost);
- **network topology**: nnU-Net's rule: an axis is halved at a level only while its feature map
  keeps at least :data:`MIN_FEATURE` voxels and its voxels are less than twice as long as the
  finest axis's (so a coarse Z is kept at the first levels until Y and X catch up), at most
  the task preset's number of levels (more where a GPU allows);
- **patch**: the median image, cut down (along the axis of largest physical extent first)
  until it holds no more voxels than the task preset's patch (times what the GPU's memory
  allows), rounded to the network's divisor per axis: up when the image is smaller (padding
  is then a few voxels), down otherwise;
- **batch**: the task preset's voxels per step (its batch times its patch) on a CPU, spread
  over the new patch; on a GPU what its memory holds;
- **steps**: the time budget over the measured seconds per step;
- **normalisation**: percentiles for skewed intensities (sparse bright structures on a dark
  background: fluorescence), z-score for intensities spread around their mean;
- **instance decoding**: the smallest objects' size bounds the decoder's ``min_size``; the
  median object's extent sets EmbedSeg's initial Gaussian per axis;
- **sampling**: patches centred on foreground more often when objects are scarce;
- **augmentation**: intensity augmentations (gamma, contrast, blur) added for little data
  (fewer than :data:`LITTLE_DATA` patches' worth of voxels);
- **test-time flips**: for little data too, prediction averages over the flips of the axes
  (``predict.tta``; the thresholds tuned at the end of training are tuned on those outputs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bioim2im.planning.fingerprint import Fingerprint

MIN_FEATURE = 4
"""Fewest voxels along an axis at the network's deepest level."""
ANISOTROPY = 2.0
"""An axis whose voxels are this many times longer than the finest's, or more, is not halved
(nnU-Net's threshold)."""
STEP_SHARE = 0.9
"""Share of the time budget planned for optimizer steps (the rest: validation, checkpoints)."""


@dataclass
class Machine:
    """What the training will run on."""

    device: str
    """"cpu" or "cuda"."""
    cores: int
    memory_gb: float | None = None
    """GPU memory (cuda only)."""
    name: str = ""

    def describe(self) -> str:
        if self.device == "cuda":
            return f"{self.name or 'a CUDA GPU'} with {self.memory_gb:.0f} GB"
        return f"{self.cores} CPU core{'s' * (self.cores != 1)}"


@dataclass
class Choice:
    """One planned value: its dotted key, the value, and why."""

    key: str
    value: Any
    why: str


@dataclass
class Geometry:
    """Patch, strides and batch."""

    patch: list[int]
    strides: list[list[int]]
    batch: int

    @property
    def divisor(self) -> list[int]:
        return [math.prod(level[a] for level in self.strides) for a in range(len(self.patch))]


def topology(sizes: Sequence[float], spacing: Sequence[float], levels: int) -> list[list[int]]:
    """Strides per level (one per axis) for feature maps of ``sizes`` voxels whose voxels are
    ``spacing`` long: halve an axis while it keeps :data:`MIN_FEATURE` voxels and its voxels
    are at most :data:`ANISOTROPY` times the finest's; at most ``levels`` - 1 downsamplings,
    at least one."""
    sizes, spacing = list(sizes), list(spacing)
    strides: list[list[int]] = []
    while len(strides) < levels - 1:
        finest = min(spacing)
        level = [
            2 if size >= 2 * MIN_FEATURE and space < ANISOTROPY * finest else 1
            for size, space in zip(sizes, spacing, strict=True)
        ]
        if all(s == 1 for s in level):
            break
        strides.append(level)
        sizes = [n / s for n, s in zip(sizes, level, strict=True)]
        spacing = [p * s for p, s in zip(spacing, level, strict=True)]
    if not strides:
        # The network needs two levels: halve the largest axes even if they get small.
        largest = max(sizes)
        strides.append([2 if n == largest else 1 for n in sizes])
    return strides


def round_to(size: float, image: int, step: int) -> int:
    """``size`` as a multiple of ``step``: up to cover an image axis no longer than it (little
    padding), else the nearest multiple that fits in the image (no padding), never below
    ``step``."""
    if size >= image:
        return max(step, -(-image // step) * step)
    return max(step, min(round(size / step), image // step) * step)


def physical_patch(image: Sequence[int], spacing: Sequence[float], budget: float) -> list[float]:
    """The patch of at most ``budget`` voxels that spans the same physical length along every
    axis it does not cover whole: the median image, cut along its physically longest axes (as
    nnU-Net shrinks its patch), never beyond the image."""
    axes = range(len(image))
    if math.prod(image) <= budget:
        return [float(n) for n in image]
    covered: set[int] = set()  # axes the patch spans whole
    while True:
        cut = [a for a in axes if a not in covered]
        kept = math.prod(image[a] for a in covered)
        # The physical side L of the cut axes: the product of L / spacing over them fills the
        # budget left by the covered axes.
        side = (budget / kept * math.prod(spacing[a] for a in cut)) ** (1 / len(cut))
        short = [a for a in cut if image[a] * spacing[a] <= side]
        if not short:
            return [float(image[a]) if a in covered else side / spacing[a] for a in axes]
        covered.update(short)


def geometry(
    fp: Fingerprint,
    *,
    reference_patch: Sequence[int],
    reference_batch: int,
    levels: int,
    machine: Machine,
) -> tuple[Geometry, list[str]]:
    """The patch, strides and batch for ``fp`` (and the reasons), from the task preset's
    ``reference_patch`` and ``reference_batch`` (what it was tuned with) and its ``levels``."""
    dims = fp.spatial_dims
    spacing = fp.spacing
    image = fp.median_shape
    reference = list(reference_patch)
    budget = math.prod(reference)
    batch_voxels = budget * reference_batch
    if len(reference) == 2 and dims == 3:
        # A 2D preset on 3D data: patches of 16 of its patches' voxels, a quarter of the batch.
        budget *= 16
        batch_voxels *= 4
    if machine.device == "cuda" and machine.memory_gb:
        # About 2 M voxels per step and GB (a 16-channel U-Net in mixed precision), patches at
        # most 8x the preset's, and one more level.
        batch_voxels = max(batch_voxels, int(machine.memory_gb * (1 << 21)))
        budget = min(batch_voxels // 2, 8 * budget)
        levels += 1
    patch = physical_patch(image, spacing, budget)
    strides = topology(patch, spacing, levels)
    divisor = [math.prod(level[a] for level in strides) for a in range(dims)]
    rounded = [round_to(p, n, d) for p, n, d in zip(patch, image, divisor, strict=True)]
    per_patch = math.prod(rounded)
    most = 32 if dims == 2 else 8
    batch = max(2, min(most, round(batch_voxels / per_patch)))
    reasons = []
    small = [a for a, (p, n) in enumerate(zip(rounded, image, strict=True)) if p >= n]
    axes = fp.axes
    if small:
        names = "/".join(axes[a] for a in small)
        reasons.append(
            f"the images ({_shape(image)} voxels, median) are no larger than a patch along "
            f"{names}: the patch covers them, rounded up to the network's divisor "
            f"{_shape(divisor)} (the few voxels beyond are padded)"
        )
    if any(p < n for p, n in zip(rounded, image, strict=True)):
        scaled = (
            ", 16 times its 2D patch for 3D data"
            if len(reference_patch) == 2 and dims == 3
            else (", what the GPU's memory allows" if budget > math.prod(reference_patch) else "")
        )
        reasons.append(
            f"a patch holds at most {budget:,} voxels (the task preset's patch "
            f"{_shape(reference_patch)}{scaled}); the images ({_shape(image)}, median) are cut "
            "along their physically longest axes first"
        )
    return Geometry(rounded, strides, batch), reasons


def channels_for(levels: int, first: int, most: int = 256) -> list[int]:
    """Channels doubling from ``first`` at each level, at most ``most``."""
    return [min(first * 2**i, most) for i in range(levels)]


def strides_value(strides: list[list[int]]) -> list[Any]:
    """Strides as a preset writes them: one number per level when every axis has it."""
    if all(len(set(level)) == 1 for level in strides):
        return [level[0] for level in strides]
    return [list(level) for level in strides]


def normalisation(fp: Fingerprint) -> tuple[dict[str, Any], str]:
    """How to normalise inputs of these intensities, and why."""
    i = fp.intensity
    low, mid, high = i["p1"], i["p50"], i["p99"]
    spread_up, spread_down = high - mid, mid - low
    skew = spread_up / spread_down if spread_down > 0 else math.inf
    numbers = f"p1 {low:.4g}, median {mid:.4g}, p99 {high:.4g}"
    if skew > 3:
        return (
            {"name": "percentile", "lower": 1.0, "upper": 99.8},
            f"intensities are skewed ({numbers}: the bright tail is {_ratio(skew)} the dark "
            "side): sparse bright structures on a darker background, as in fluorescence; "
            "percentiles 1-99.8 map background and signal to 0-1 whatever a few hot pixels do",
        )
    return (
        {"name": "zscore"},
        f"intensities spread evenly around their median ({numbers}): z-score (mean 0, std 1), "
        "as for transmitted light or EM",
    )


def decoder_min_size(fp: Fingerprint, default: int) -> tuple[int, str] | None:
    """The instance decoder's smallest object, from the smallest labelled objects."""
    objects = fp.objects
    if objects is None or objects.count == 0:
        return None
    smallest = objects.volume[0]
    size = max(3, min(default * 4, int(0.5 * smallest)))
    return size, (
        f"the smallest labelled objects (5th percentile) have {smallest:.0f} voxels: objects "
        f"below half that ({size}) are decoding noise"
    )


def embedding_radius(fp: Fingerprint, default: float) -> tuple[list[float], str] | None:
    """EmbedSeg's initial Gaussian: half the median object's extent along each axis."""
    objects = fp.objects
    if objects is None or objects.count == 0:
        return None
    radius = [round(max(1.0, values[1] / 2), 1) for values in objects.extent.values()]
    if all(0.8 * default <= r <= 1.25 * default for r in radius):
        return None
    return radius, (
        f"the median object spans {' x '.join(f'{v[1]:g}' for v in objects.extent.values())} "
        f"voxels: the untrained Gaussians start at half that along each axis (not {default:g} "
        "voxels), so training starts from objects' sizes"
    )


LITTLE_DATA = 16
"""Training images holding fewer voxels than this many patches are little data: augmented more."""
INTENSITY_AUGMENTATIONS: tuple[dict[str, Any], ...] = (
    {"name": "gamma", "prob": 0.5},
    {"name": "contrast", "prob": 0.5},
    {"name": "blur", "prob": 0.3},
)
"""What little data get besides the task preset's augmentations: the brightness, contrast and
focus that vary from image to image in microscopy, so that a few images stand for more."""


def patches_worth(fp: Fingerprint, patch: Sequence[int]) -> float:
    """How many patches' worth of voxels the training images hold (little data: fewer than
    :data:`LITTLE_DATA`)."""
    return sum(math.prod(shape) for shape in fp.shapes) / math.prod(patch)


def augmentations(
    fp: Fingerprint, patch: Sequence[int], present: Sequence[str]
) -> tuple[list[dict[str, Any]], str] | None:
    """Intensity augmentations to add when the training images are little data."""
    patches = patches_worth(fp, patch)
    added = [dict(a) for a in INTENSITY_AUGMENTATIONS if a["name"] not in present]
    if patches >= LITTLE_DATA or not added:
        return None
    names = ", ".join(a["name"] for a in added)
    return added, (
        f"the training images hold {patches:.1f} patches' worth of voxels (fewer than "
        f"{LITTLE_DATA}): {names} make the few images stand for the brightness, contrast and "
        "focus other images will have (nnU-Net augments as much)"
    )


def test_time_flips(fp: Fingerprint, patch: Sequence[int]) -> tuple[bool, str] | None:
    """Test-time flips for a model trained on little data."""
    patches = patches_worth(fp, patch)
    if patches >= LITTLE_DATA:
        return None
    flips = 2 ** len(patch)
    return True, (
        f"the training images hold {patches:.1f} patches' worth of voxels (fewer than "
        f"{LITTLE_DATA}): prediction averages the network over the {flips} flips of the image's "
        "axes, which evens out what a model fitted to few objects learned by heart (nnU-Net "
        f"predicts with mirroring by default); it runs the network {flips} times, so set "
        "predict.tta = false for images far larger than these"
    )


def foreground_fraction(fp: Fingerprint, default: float) -> tuple[float, str] | None:
    objects = fp.objects
    if objects is None or objects.foreground >= 0.1:
        return None
    return 0.5, (
        f"objects cover only {objects.foreground:.1%} of the images: half the patches are "
        "centred on one (nnU-Net oversamples foreground the same way)"
    )


def steps_for(
    budget_minutes: float, seconds_per_step: float, *, measured: bool = True, least: int = 50
) -> tuple[int, str]:
    steps = max(least, int(STEP_SHARE * budget_minutes * 60 / seconds_per_step))
    where = "measured on this machine" if measured else "as given"
    return steps, (
        f"{seconds_per_step:.3g} s per step {where}: {steps} steps fill "
        f"{STEP_SHARE:.0%} of the {budget_minutes:g}-minute budget (the rest for validation "
        "and checkpoints); the learning-rate schedule runs its whole course in them"
    )


def _shape(values: Sequence[Any]) -> str:
    return " x ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _ratio(value: float) -> str:
    return "unbounded times" if not math.isfinite(value) else f"{value:.1f} times"
