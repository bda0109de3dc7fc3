"""Normalisations and augmentations of training samples.

A sample maps keys to float32 arrays shaped (C, *spatial): ``"image"``, and per head
``"target/<head>"`` and ``"weight/<head>"``. An augmentation is called as ``t(sample, rng)`` and
returns the new sample: spatial ones apply the same geometric change to every key (everything
but the image keys with nearest interpolation), intensity ones change only the image keys. All
randomness comes from ``rng``, so a sample is a pure function of the seed and its index.

A normalisation maps one image (C, *spatial) to float32, per channel. The built-in ones split
into ``statistics(image)`` (per channel, computed once per image) and ``apply(image, stats)``,
so that patches read lazily from a file are normalised with whole-image statistics.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bioim2im.errors import UserError
from bioim2im.plugin.registry import suggest

Sample = dict[str, np.ndarray]
Augmentation = Callable[[Sample, np.random.Generator], Sample]

# Above this many values per channel, statistics come from an evenly strided subsample.
STATISTICS_SAMPLE = 1 << 20
_EPS = 1e-6


class Normalization(Protocol):
    def statistics(self, image: np.ndarray) -> np.ndarray: ...

    def apply(self, image: np.ndarray, stats: np.ndarray) -> np.ndarray: ...

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


def _channels(image: np.ndarray) -> np.ndarray:
    """(C, N) values per channel: finite ones only, strided down to about STATISTICS_SAMPLE."""
    flat = image.reshape(image.shape[0], -1)
    step = max(1, flat.shape[1] // STATISTICS_SAMPLE)
    flat = flat[:, ::step]
    if not np.isfinite(flat).all():
        # Regression targets mark unannotated pixels with NaN; they must not skew the statistics.
        return np.array([c[np.isfinite(c)] for c in flat], dtype=object)
    return flat


def _per_channel(image: np.ndarray, stat: Callable[[np.ndarray], list[float]]) -> np.ndarray:
    return np.array([stat(c) if c.size else [0.0, 1.0] for c in _channels(image)], dtype=np.float64)


def _scale(image: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    shape = (-1,) + (1,) * (image.ndim - 1)
    # float32 throughout: float64 statistics would upcast (and double) every image.
    low32 = low.astype(np.float32).reshape(shape)
    span = np.maximum(high - low, _EPS).astype(np.float32).reshape(shape)
    out = np.subtract(image, low32, dtype=np.float32)
    out /= span
    return out


class _Normalization:
    def statistics(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply(self, image: np.ndarray, stats: np.ndarray) -> np.ndarray:
        return _scale(image, stats[:, 0], stats[:, 1])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.apply(image, self.statistics(image))


@dataclass(frozen=True)
class Percentile(_Normalization):
    """Map the lower/upper percentiles of each channel to 0/1 (optionally clipped to [0, 1])."""

    lower: float = 1.0
    upper: float = 99.8
    clip: bool = False

    def statistics(self, image: np.ndarray) -> np.ndarray:
        return _per_channel(image, lambda c: np.percentile(c, [self.lower, self.upper]).tolist())

    def apply(self, image: np.ndarray, stats: np.ndarray) -> np.ndarray:
        scaled = super().apply(image, stats)
        return np.clip(scaled, 0.0, 1.0, out=scaled) if self.clip else scaled


@dataclass(frozen=True)
class ZScore(_Normalization):
    """Zero mean, unit standard deviation per channel."""

    def statistics(self, image: np.ndarray) -> np.ndarray:
        return _per_channel(image, lambda c: [c.mean(dtype=np.float64), c.std(dtype=np.float64)])

    def apply(self, image: np.ndarray, stats: np.ndarray) -> np.ndarray:
        return _scale(image, stats[:, 0], stats[:, 0] + stats[:, 1])


@dataclass(frozen=True)
class MinMax(_Normalization):
    """Map each channel's minimum/maximum to 0/1."""

    def statistics(self, image: np.ndarray) -> np.ndarray:
        return _per_channel(image, lambda c: [c.min(), c.max()])


@dataclass(frozen=True)
class FixedRange(_Normalization):
    """Map the fixed values ``min``/``max`` to 0/1 (e.g. 0/65535), the same for every image."""

    min: float
    max: float

    def statistics(self, image: np.ndarray) -> np.ndarray:
        return np.tile([self.min, self.max], (image.shape[0], 1)).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Augmentations


@dataclass
class Compose:
    """Augmentations applied in order."""

    transforms: Sequence[Augmentation]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


@dataclass
class _Random:
    """An augmentation applied with probability ``prob`` to the keys it concerns."""

    prob: float
    spatial_dims: int = 2
    keys: Sequence[str] = ("image",)
    image_keys: Sequence[str] = ("image",)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return sample
        return self.transform(dict(sample), rng)

    def transform(self, sample: Sample, rng: np.random.Generator) -> Sample:
        raise NotImplementedError

    def _moved(self, sample: Sample) -> list[str]:
        return [k for k in self.keys if k in sample]

    def _intensity(self, sample: Sample) -> list[str]:
        return [k for k in self.image_keys if k in sample]


@dataclass
class Flip(_Random):
    """Flip each of ``axes`` (spatial axis numbers; default all) with probability ``prob``."""

    axes: Sequence[int] | None = None

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        axes = range(self.spatial_dims) if self.axes is None else self.axes
        # Counted from the end, so that a key without Z (a projection's target) flips along Y/X.
        flipped = [a - self.spatial_dims for a in axes if rng.random() < self.prob]
        if not flipped:
            return sample
        out = dict(sample)
        for key in self._moved(sample):
            array = sample[key]
            out[key] = np.flip(array, axis=tuple(a for a in flipped if -a < array.ndim))
        return out


@dataclass
class Rot90(_Random):
    """Rotate by a multiple of 90° in the YX plane (only 180° when the patch is not square)."""

    def transform(self, sample: Sample, rng: np.random.Generator) -> Sample:
        keys = self._moved(sample)
        y, x = sample[keys[0]].shape[-2:]
        turns = int(rng.integers(1, 4)) if y == x else 2
        for key in keys:
            sample[key] = np.rot90(sample[key], k=turns, axes=(-2, -1))
        return sample


@dataclass
class GaussianNoise(_Random):
    """Add Gaussian noise whose standard deviation is drawn from [0, ``std``]."""

    std: float = 0.1

    def transform(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for key in self._intensity(sample):
            image = sample[key]
            sigma = np.float32(rng.uniform(0.0, self.std))
            sample[key] = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
        return sample


@dataclass
class Gamma(_Random):
    """Gamma correction with gamma from ``gamma_range``, within each channel's value range."""

    gamma_range: tuple[float, float] = (0.7, 1.5)

    def transform(self, sample: Sample, rng: np.random.Generator) -> Sample:
        gamma = rng.uniform(*self.gamma_range)
        for key in self._intensity(sample):
            image = sample[key]
            axes = tuple(range(1, image.ndim))
            low = image.min(axis=axes, keepdims=True)
            span = np.maximum(image.max(axis=axes, keepdims=True) - low, _EPS)
            sample[key] = (((image - low) / span) ** gamma * span + low).astype(np.float32)
        return sample


@dataclass
class Contrast(_Random):
    """Scale each channel's deviation from its mean by a factor from ``contrast_range``."""

    contrast_range: tuple[float, float] = (0.75, 1.25)

    def transform(self, sample: Sample, rng: np.random.Generator) -> Sample:
        factor = np.float32(rng.uniform(*self.contrast_range))
        for key in self._intensity(sample):
            image = sample[key]
            mean = image.mean(axis=tuple(range(1, image.ndim)), keepdims=True)
            sample[key] = (image - mean) * factor + mean
        return sample


@dataclass
class Blur(_Random):
    """Gaussian blur with a sigma (pixels) drawn from ``sigma_range``."""

    sigma_range: tuple[float, float] = (0.5, 1.5)

    def transform(self, sample: Sample, rng: np.random.Generator) -> Sample:
        from scipy.ndimage import gaussian_filter

        sigma = (0.0, *([rng.uniform(*self.sigma_range)] * self.spatial_dims))
        for key in self._intensity(sample):
            sample[key] = gaussian_filter(sample[key], sigma=sigma, mode="reflect")
        return sample


@dataclass
class _Monai(_Random):
    """A MONAI dictionary transform by class name, seeded from ``rng`` before each call.

    Built lazily from its name and arguments, so it pickles into DataLoader workers.
    """

    name: str = ""
    """Class name in ``monai.transforms``."""
    options: Mapping[str, Any] = field(default_factory=dict)
    transform_keys: Sequence[str] = ()
    image_mode: str | None = None
    """Interpolation of the keys that hold intensities; label keys get "nearest". None: leave
    ``mode``."""
    label_keys: Sequence[str] | None = None
    """Keys holding labels or masks (resampled as nearest); None: every key not in image_keys."""
    _built: Any = field(default=None, init=False, repr=False)

    def build(self) -> Any:
        import monai.transforms as mt

        kwargs = dict(self.options)
        if self.image_mode is not None:
            labels = (
                [k for k in self.keys if k not in self.image_keys]
                if self.label_keys is None
                else self.label_keys
            )
            kwargs["mode"] = [
                "nearest" if k in labels else self.image_mode for k in self.transform_keys
            ]
        try:
            return getattr(mt, self.name)(keys=list(self.transform_keys), **kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"MONAI transform {self.name}: {exc}") from None

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        from monai.transforms import Randomizable
        from monai.utils import convert_to_numpy

        if self._built is None:
            self._built = self.build()
        if isinstance(self._built, Randomizable):
            self._built.set_random_state(seed=int(rng.integers(2**31)))
        if rng.random() >= self.prob:
            return sample
        if len({sample[k].ndim for k in self.transform_keys}) > 1:
            raise UserError(
                f"MONAI transform {self.name} cannot move arrays of different dimensions together "
                "(a projection head's 2D target); leave it out of data.augment"
            )
        result = self._built({k: sample[k] for k in self.transform_keys})
        out = dict(sample)
        for key in self.transform_keys:
            out[key] = np.asarray(convert_to_numpy(result[key]), dtype=np.float32)
            if out[key].shape != sample[key].shape:
                raise UserError(
                    f"MONAI transform {self.name} changed the shape of {key} from "
                    f"{sample[key].shape} to {out[key].shape}; augmentations must keep the patch "
                    "size (e.g. RandZoomd needs keep_size = true)"
                )
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_built": None}


def affine(
    *,
    prob: float,
    rotate_range: float,
    scale_range: float,
    spatial_dims: int,
    keys: Sequence[str],
    image_keys: Sequence[str],
    label_keys: Sequence[str] | None = None,
) -> _Monai:
    # In 3D only in-plane (YX) rotations: microscopy volumes are rarely isotropic.
    rotate = rotate_range if spatial_dims == 2 else (rotate_range, 0.0, 0.0)
    options = {
        "prob": 1.0,
        "rotate_range": rotate,
        "scale_range": scale_range,
        "padding_mode": "reflection",
    }
    return _Monai(
        prob, spatial_dims, keys, image_keys, "RandAffined", options, keys, "bilinear", label_keys
    )


def elastic(
    *,
    prob: float,
    magnitude_range: tuple[float, float],
    spacing: float,
    sigma_range: tuple[float, float],
    spatial_dims: int,
    keys: Sequence[str],
    image_keys: Sequence[str],
    label_keys: Sequence[str] | None = None,
) -> _Monai:
    options: dict[str, Any] = {
        "prob": 1.0,
        "magnitude_range": magnitude_range,
        "padding_mode": "reflection",
    }
    if spatial_dims == 2:
        name, options["spacing"] = "Rand2DElasticd", spacing
    else:
        name, options["sigma_range"] = "Rand3DElasticd", sigma_range
    return _Monai(prob, spatial_dims, keys, image_keys, name, options, keys, "bilinear", label_keys)


# MONAI dictionary transforms a preset may name: random intensity and spatial augmentations that
# keep the patch's shape. Nothing else: other MONAI transforms load files, call functions by
# name (LoadImaged's reader, RandLambdad, RandTorchVisiond...) or change the patch size.
MONAI_TRANSFORMS = frozenset(
    {
        # intensity
        "RandAdjustContrastd",
        "RandBiasFieldd",
        "RandCoarseDropoutd",
        "RandCoarseShuffled",
        "RandGaussianNoised",
        "RandGaussianSharpend",
        "RandGaussianSmoothd",
        "RandGibbsNoised",
        "RandHistogramShiftd",
        "RandKSpaceSpikeNoised",
        "RandRicianNoised",
        "RandScaleIntensityFixedMeand",
        "RandScaleIntensityd",
        "RandShiftIntensityd",
        "RandSmoothFieldAdjustContrastd",
        "RandSmoothFieldAdjustIntensityd",
        "RandStdShiftIntensityd",
        # spatial
        "Rand2DElasticd",
        "Rand3DElasticd",
        "RandAffined",
        "RandAxisFlipd",
        "RandFlipd",
        "RandGridDistortiond",
        "RandRotate90d",
        "RandRotated",
        "RandSimulateLowResolutiond",
        "RandSmoothDeformd",
        "RandZoomd",
    }
)
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_-]{0,64}$")
_MAX_NESTING = 3


def monai_argument_problem(key: str, value: Any) -> str | None:
    """Why argument ``key`` could make MONAI import or call something by name, or None: only
    numbers, booleans, plain words (no dots, colons or slashes: no dotted paths) and lists of
    them are allowed."""
    problem = _unsafe(value, 0)
    if problem is None:
        return None
    return (
        f"args.{key} {problem}; arguments are numbers, booleans, plain words (letters, digits, "
        "'_', '-') and lists of them"
    )


def check_monai_arguments(name: str, args: Mapping[str, Any]) -> None:
    """A UserError for the first argument :func:`monai_argument_problem` refuses."""
    for key, value in args.items():
        problem = monai_argument_problem(key, value)
        if problem:
            raise UserError(f"transform 'monai' ({name}): {problem}")


def _unsafe(value: Any, depth: int) -> str | None:
    if value is None or isinstance(value, (bool, int, float)):
        return None
    if isinstance(value, str):
        return None if _PLAIN_WORD.match(value) else f"= {value[:80]!r} is not a plain word"
    if isinstance(value, (list, tuple)):
        if depth >= _MAX_NESTING:
            return "nests lists too deeply"
        return next((p for v in value if (p := _unsafe(v, depth + 1))), None)
    return f"is a {type(value).__name__}, which MONAI arguments cannot be here"


def monai_transform(
    name: str,
    args: Mapping[str, Any],
    *,
    spatial_dims: int,
    keys: Sequence[str],
    image_keys: Sequence[str],
    label_keys: Sequence[str] | None = None,
) -> _Monai:
    """Any dictionary transform of ``monai.transforms`` by class name.

    Without ``keys`` in ``args`` an intensity transform gets the image keys and any other one
    every key; a spatial transform that takes ``mode`` interpolates label keys (default: the
    non-image keys) with ``nearest`` unless ``args`` sets ``mode``.
    """
    if name not in MONAI_TRANSFORMS:
        raise UserError(
            f"transform 'monai': '{name}' is not one of the MONAI transforms a preset may use"
            f"{suggest(name, MONAI_TRANSFORMS)} (allowed: {', '.join(sorted(MONAI_TRANSFORMS))})"
        )
    check_monai_arguments(name, {k: v for k, v in args.items() if k != "keys"})
    import monai.transforms as mt

    found = getattr(mt, name)
    options = dict(args)
    intensity = found.__module__.startswith("monai.transforms.intensity")
    chosen = options.pop("keys", None)
    if chosen is not None and not (
        isinstance(chosen, list) and all(isinstance(k, str) for k in chosen)
    ):
        raise UserError(f"transform 'monai' ({name}): args.keys must be a list of sample keys")
    transform_keys = list(chosen) if chosen is not None else list(image_keys if intensity else keys)
    unknown = [k for k in transform_keys if k not in keys]
    if unknown:
        raise UserError(
            f"transform 'monai' ({name}): args.keys {unknown} are not keys of a training sample "
            f"(keys: {', '.join(keys)})"
        )
    mode = inspect.signature(found.__init__).parameters.get("mode")
    image_mode = None
    if mode is not None and "mode" not in options and not intensity:
        image_mode = str(mode.default)
    transform = _Monai(
        1.0, spatial_dims, keys, image_keys, name, options, transform_keys, image_mode, label_keys
    )
    transform.build()  # fail now, on the user's arguments, rather than later in a worker
    return transform
