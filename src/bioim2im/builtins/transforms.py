"""Built-in transforms: normalisations (``data.normalize``, a head's ``target_normalize``) and
augmentations (``data.augment``).

A normalisation's factory returns a callable on one image (C, *spatial) -> float32; an
augmentation's returns ``t(sample, rng) -> sample`` (see :mod:`bioim2im.data.transforms`).
Each is registered with ``role="normalize"`` or ``role="augment"`` so presets can be checked
for one used in the other's place. Probabilities are per application of the augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar, suggest

if TYPE_CHECKING:
    from bioim2im.data.transforms import Augmentation, Normalization

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Range = tuple[float, float]
DEFAULT_KEYS = ("image",)
# `keys`, `image_keys`, `label_keys`: structural arguments set by the data pipeline, as
# hookspecs.bioim2im_register_transforms describes (label_keys None: every key but image_keys).


def _ordered(key: str, value: Range, minimum: float = 0.0) -> None:
    low, high = value
    if not minimum <= low <= high:
        raise ValueError(
            f"{key} must be [low, high] with {minimum} <= low <= high, got {list(value)}"
        )


def _check_percentile(*, lower: float, upper: float, **_: Any) -> None:
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")


def _check_fixed_range(*, min: float, max: float, **_: Any) -> None:
    if not min < max:
        raise ValueError(f"min ({min}) must be below max ({max})")


def _check_flip(*, axes: list[int] | None, spatial_dims: int | None, **_: Any) -> None:
    if (
        axes is not None
        and spatial_dims is not None
        and any(not 0 <= a < spatial_dims for a in axes)
    ):
        raise ValueError(f"axes {axes} must be spatial axis numbers 0..{spatial_dims - 1}")


def _check_elastic(
    *, magnitude_range: Range | None, sigma_range: Range, spacing: float, **_: Any
) -> None:
    if magnitude_range is not None:
        _ordered("magnitude_range", magnitude_range)
    _ordered("sigma_range", sigma_range)
    if spacing <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")


def _check_range(key: str, minimum: float = 0.0) -> Any:
    def check(**params: Any) -> None:
        _ordered(key, params[key], minimum)

    return check


def percentile(*, lower: float = 1.0, upper: float = 99.8, clip: bool = False) -> Normalization:
    """Map each channel's lower/upper percentile to 0/1 (per image, optionally clipped).

    Args:
        lower: Percentile mapped to 0.
        upper: Percentile mapped to 1.
        clip: Clip the result to [0, 1].
    """
    from bioim2im.data.transforms import Percentile

    return Percentile(lower, upper, clip)


def zscore() -> Normalization:
    """Zero mean and unit standard deviation per channel (per image)."""
    from bioim2im.data.transforms import ZScore

    return ZScore()


def minmax() -> Normalization:
    """Map each channel's minimum/maximum to 0/1 (per image)."""
    from bioim2im.data.transforms import MinMax

    return MinMax()


def fixed_range(*, min: float, max: float) -> Normalization:
    """Map the fixed values min/max to 0/1, the same for every image (e.g. 0 and 65535).

    Args:
        min: Value mapped to 0.
        max: Value mapped to 1.
    """
    from bioim2im.data.transforms import FixedRange

    return FixedRange(min, max)


def flip(
    *,
    prob: Probability = 0.5,
    axes: list[int] | None = None,
    spatial_dims: int = 2,
    keys: Sequence[str] = DEFAULT_KEYS,
) -> Augmentation:
    """Flip along each spatial axis (0 = first of (Z)YX; default all) with probability prob.

    Args:
        prob: Probability of a flip, along each axis on its own.
        axes: The spatial axes that may be flipped (0 = the first of (Z)YX); default all.
    """
    from bioim2im.data.transforms import Flip

    return Flip(prob, spatial_dims, keys, axes=axes)


def rot90(
    *, prob: Probability = 0.5, spatial_dims: int = 2, keys: Sequence[str] = DEFAULT_KEYS
) -> Augmentation:
    """Rotate by 90°, 180° or 270° in the YX plane (180° only for non-square patches).

    Args:
        prob: Probability that a patch is transformed.
    """
    from bioim2im.data.transforms import Rot90

    return Rot90(prob, spatial_dims, keys)


def affine(
    *,
    prob: Probability = 0.5,
    rotate_range: float = 3.1416,
    scale_range: float = 0.1,
    spatial_dims: int = 2,
    keys: Sequence[str] = DEFAULT_KEYS,
    image_keys: Sequence[str] = DEFAULT_KEYS,
    label_keys: Sequence[str] | None = None,
) -> Augmentation:
    """Random rotation (±rotate_range radians, in-plane) and scaling (1 ± scale_range) via MONAI RandAffine.

    Args:
        prob: Probability that a patch is transformed.
        rotate_range: Largest rotation in radians, either way, in the YX plane.
        scale_range: Largest change of scale, up or down (0.1: 0.9 to 1.1).
    """
    from bioim2im.data import transforms

    return transforms.affine(
        prob=prob,
        rotate_range=rotate_range,
        scale_range=scale_range,
        spatial_dims=spatial_dims,
        keys=keys,
        image_keys=image_keys,
        label_keys=label_keys,
    )


def elastic(
    *,
    prob: Probability = 0.2,
    magnitude_range: Range | None = None,
    spacing: float = 32.0,
    sigma_range: Range = (5.0, 8.0),
    spatial_dims: int = 2,
    keys: Sequence[str] = DEFAULT_KEYS,
    image_keys: Sequence[str] = DEFAULT_KEYS,
    label_keys: Sequence[str] | None = None,
) -> Augmentation:
    """Elastic deformation via MONAI Rand2DElastic (control-point spacing) / Rand3DElastic (sigma_range).

    Args:
        prob: Probability that a patch is transformed.
        magnitude_range: Range of the deformation's magnitude; default (2, 5) in 2D (pixels
            of control-point offset), (100, 200) in 3D (MONAI's scale of its random field).
        spacing: Distance in pixels between the control points (2D).
        sigma_range: Range of the smoothing of the random field (3D).
    """
    from bioim2im.data import transforms

    # MONAI's two elastic transforms scale the magnitude differently (control-point offsets in
    # 2D, a smoothed random field in 3D), hence per-dimension defaults.
    magnitude = magnitude_range or ((2.0, 5.0) if spatial_dims == 2 else (100.0, 200.0))
    return transforms.elastic(
        prob=prob,
        magnitude_range=magnitude,
        spacing=spacing,
        sigma_range=sigma_range,
        spatial_dims=spatial_dims,
        keys=keys,
        image_keys=image_keys,
        label_keys=label_keys,
    )


def gaussian_noise(
    *,
    prob: Probability = 0.3,
    std: Annotated[float, Field(ge=0.0)] = 0.1,
    image_keys: Sequence[str] = DEFAULT_KEYS,
) -> Augmentation:
    """Add Gaussian noise with a standard deviation drawn from [0, std] (image only).

    Args:
        prob: Probability that a patch is transformed.
        std: Largest standard deviation of the noise, on the normalised image's scale.
    """
    from bioim2im.data.transforms import GaussianNoise

    return GaussianNoise(prob, image_keys=image_keys, std=std)


def gamma(
    *,
    prob: Probability = 0.3,
    gamma_range: Range = (0.7, 1.5),
    image_keys: Sequence[str] = DEFAULT_KEYS,
) -> Augmentation:
    """Gamma correction with gamma drawn from gamma_range, within each channel's range (image only).

    Args:
        prob: Probability that a patch is transformed.
        gamma_range: The range gamma is drawn from.
    """
    from bioim2im.data.transforms import Gamma

    return Gamma(prob, image_keys=image_keys, gamma_range=gamma_range)


def contrast(
    *,
    prob: Probability = 0.3,
    contrast_range: Range = (0.75, 1.25),
    image_keys: Sequence[str] = DEFAULT_KEYS,
) -> Augmentation:
    """Scale each channel's contrast around its mean by a factor from contrast_range (image only).

    Args:
        prob: Probability that a patch is transformed.
        contrast_range: The range the factor is drawn from.
    """
    from bioim2im.data.transforms import Contrast

    return Contrast(prob, image_keys=image_keys, contrast_range=contrast_range)


def blur(
    *,
    prob: Probability = 0.2,
    sigma_range: Range = (0.5, 1.5),
    spatial_dims: int = 2,
    image_keys: Sequence[str] = DEFAULT_KEYS,
) -> Augmentation:
    """Gaussian blur with sigma (pixels) drawn from sigma_range (image only).

    Args:
        prob: Probability that a patch is transformed.
        sigma_range: The range sigma (pixels) is drawn from.
    """
    from bioim2im.data.transforms import Blur

    return Blur(prob, spatial_dims, image_keys=image_keys, sigma_range=sigma_range)


def _allowed_monai(name: str) -> str:
    from bioim2im.data.transforms import MONAI_TRANSFORMS

    if name not in MONAI_TRANSFORMS:
        raise ValueError(
            f"'{name}' is not one of the MONAI transforms a preset may use"
            f"{suggest(name, MONAI_TRANSFORMS)} (allowed: {', '.join(sorted(MONAI_TRANSFORMS))})"
        )
    return name


def _safe_monai_args(args: dict[str, Any] | None) -> dict[str, Any] | None:
    from bioim2im.data.transforms import monai_argument_problem

    for key, value in (args or {}).items():
        problem = None if key == "keys" else monai_argument_problem(key, value)
        if problem:
            raise ValueError(problem)
    return args


MonaiName = Annotated[str, AfterValidator(_allowed_monai)]
MonaiArgs = Annotated[dict[str, Any] | None, AfterValidator(_safe_monai_args)]


def monai(
    *,
    transform: MonaiName,
    args: MonaiArgs = None,
    spatial_dims: int = 2,
    keys: Sequence[str] = DEFAULT_KEYS,
    image_keys: Sequence[str] = DEFAULT_KEYS,
    label_keys: Sequence[str] | None = None,
) -> Augmentation:
    """A random MONAI dictionary transform by class name, e.g. transform = "RandGaussianSmoothd", args = {prob = 0.2}.

    Args:
        transform: The MONAI class name; one of an allowlist of random intensity and spatial
            dictionary transforms that keep the patch's shape.
        args: Its arguments: numbers, booleans, plain words or lists of them (keys are set by
            bioim2im).
    """
    from bioim2im.data.transforms import monai_transform

    return monai_transform(
        transform,
        args or {},
        spatial_dims=spatial_dims,
        keys=keys,
        image_keys=image_keys,
        label_keys=label_keys,
    )


NORMALIZATIONS = (percentile, zscore, minmax, fixed_range)
AUGMENTATIONS = (flip, rot90, affine, elastic, gaussian_noise, gamma, contrast, blur, monai)


def _percentile_ops(params: dict[str, Any], axes: list[str]) -> list[dict[str, Any]]:
    scale = {
        "axes": axes,
        "min_percentile": float(params["lower"]),
        "max_percentile": float(params["upper"]),
    }
    clip = [{"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}}] if params["clip"] else []
    return [{"id": "scale_range", "kwargs": scale}, *clip]


def _minmax_ops(params: dict[str, Any], axes: list[str]) -> list[dict[str, Any]]:
    scale = {"axes": axes, "min_percentile": 0.0, "max_percentile": 100.0}
    return [{"id": "scale_range", "kwargs": scale}]


def _zscore_ops(params: dict[str, Any], axes: list[str]) -> list[dict[str, Any]]:
    return [{"id": "zero_mean_unit_variance", "kwargs": {"axes": axes}}]


def _fixed_range_ops(params: dict[str, Any], axes: list[str]) -> list[dict[str, Any]]:
    low, high = float(params["min"]), float(params["max"])
    linear = {"gain": 1.0 / (high - low), "offset": -low / (high - low)}
    return [{"id": "scale_linear", "kwargs": linear}]


BIOIMAGEIO: dict[str, Any] = {
    "percentile": _percentile_ops,
    "minmax": _minmax_ops,
    "zscore": _zscore_ops,
    "fixed_range": _fixed_range_ops,
}
"""The normalisations' bioimage.io operations (per channel: reduced over the spatial axes)."""


CHECKS: dict[str, Any] = {
    "percentile": _check_percentile,
    "fixed_range": _check_fixed_range,
    "flip": _check_flip,
    "elastic": _check_elastic,
    "gamma": _check_range("gamma_range", minimum=1e-3),
    "contrast": _check_range("contrast_range"),
    "blur": _check_range("sigma_range"),
}


@hookimpl
def bioim2im_register_transforms(registry: Registrar) -> None:
    for role, factories in (("normalize", NORMALIZATIONS), ("augment", AUGMENTATIONS)):
        for factory in factories:
            extras = {
                extra: found
                for extra, table in (("check", CHECKS), ("bioimageio", BIOIMAGEIO))
                if (found := table.get(factory.__name__)) is not None
            }
            registry.add(factory.__name__, factory, role=role, **extras)
