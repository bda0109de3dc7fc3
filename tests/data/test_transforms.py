"""Normalisations give the documented values; augmentations keep image and targets aligned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from bioim2im.errors import UserError
from bioim2im.plugin.manager import get_registry

KEYS = ["image", "target/seg", "weight/seg"]


def build(name: str, spatial_dims: int = 2, **params: Any) -> Any:
    component = get_registry().get("transform", name)
    return component.build(params, spatial_dims=spatial_dims, keys=KEYS, image_keys=["image"])


def blobs(shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """A smooth random image, its thresholded mask as target, and a weight of ones."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random(shape), sigma=4)
    image = ((image - image.min()) / (image.max() - image.min())).astype(np.float32)[None]
    return {
        "image": image,
        "target/seg": (image > 0.5).astype(np.float32),
        "weight/seg": np.ones_like(image),
    }


# -- normalisations --------------------------------------------------------------------------


def test_percentile_maps_percentiles_to_0_and_1() -> None:
    image = np.arange(1001, dtype=np.float32).reshape(1, 7, 143)
    out = build("percentile", lower=1.0, upper=99.0)(image)
    assert out.dtype == np.float32
    assert np.isclose(out.ravel()[10], 0.0, atol=1e-6)
    assert np.isclose(out.ravel()[990], 1.0, atol=1e-6)
    clipped = build("percentile", lower=1.0, upper=99.0, clip=True)(image)
    assert clipped.min() == 0.0 and clipped.max() == 1.0


def test_zscore_minmax_fixed_range_values_per_channel() -> None:
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(10, 3, (40, 40)), rng.normal(-5, 0.5, (40, 40))]).astype(
        np.float32
    )
    z = build("zscore")(image)
    assert np.allclose(z.mean(axis=(1, 2)), 0, atol=1e-5) and np.allclose(
        z.std(axis=(1, 2)), 1, atol=1e-4
    )
    m = build("minmax")(image)
    assert np.allclose(m.min(axis=(1, 2)), 0) and np.allclose(m.max(axis=(1, 2)), 1)
    f = build("fixed_range", min=0.0, max=100.0)(np.array([[[0.0, 50.0, 100.0]]], np.float32))
    assert np.allclose(f, [[[0.0, 0.5, 1.0]]])


def test_statistics_then_apply_equals_whole_image_call_and_ignores_nan() -> None:
    norm = build("zscore")
    image = np.random.default_rng(1).normal(3, 2, (1, 30, 30)).astype(np.float32)
    assert np.allclose(norm.apply(image[:, :10], norm.statistics(image)), norm(image)[:, :10])
    with_nan = image.copy()
    with_nan[0, 0, 0] = np.nan
    assert np.isfinite(norm.statistics(with_nan)).all()


def test_invalid_parameters_are_user_errors() -> None:
    with pytest.raises(UserError, match="lower < upper"):
        build("percentile", lower=50.0, upper=10.0)
    with pytest.raises(UserError, match="below max"):
        build("fixed_range", min=1.0, max=1.0)


def test_normalisations_and_augmentations_are_registered_with_their_role() -> None:
    registry = get_registry()
    roles = {
        name: registry.get("transform", name).extras["role"] for name in registry.names("transform")
    }
    normalizations = {n for n, r in roles.items() if r == "normalize"}
    augmentations = {n for n, r in roles.items() if r == "augment"}
    assert normalizations >= {"percentile", "zscore", "minmax", "fixed_range"}
    assert augmentations >= {"flip", "rot90", "affine", "elastic", "gaussian_noise", "gamma"}
    assert augmentations >= {"contrast", "blur", "monai"}


# -- augmentations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("flip", {"prob": 1.0}),
        ("rot90", {"prob": 1.0}),
        ("affine", {"prob": 1.0}),
        ("elastic", {"prob": 1.0}),
    ],
)
@pytest.mark.parametrize("shape", [(64, 64), (16, 48, 48)])
def test_spatial_augmentations_move_image_and_target_together(
    name: str, params: dict[str, Any], shape: tuple[int, ...]
) -> None:
    if name == "elastic" and len(shape) == 3:
        params = {**params, "magnitude_range": (20.0, 40.0)}  # keep the 3D case quick and gentle
    sample = blobs(shape)
    out = build(name, spatial_dims=len(shape), **params)(sample, np.random.default_rng(3))
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in sample.items()}
    assert not np.array_equal(out["image"], sample["image"])
    agree = (out["target/seg"] == (out["image"] > 0.5)).mean()
    # Flips and rotations by 90° are exact; interpolated images differ at the mask's edges only.
    assert agree == 1.0 if name in ("flip", "rot90") else agree > 0.97
    assert set(np.unique(out["target/seg"])) <= {0.0, 1.0}  # labels interpolated as nearest


def test_affine_in_3d_rotates_in_plane_only() -> None:
    sample = blobs((8, 32, 32))
    sample["image"][:] = sample["image"][:, :1]  # every Z plane the same
    out = build("affine", spatial_dims=3, prob=1.0)(sample, np.random.default_rng(0))["image"]
    assert np.allclose(out[:, 1:], out[:, :1], atol=1e-5)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("gaussian_noise", {"prob": 1.0, "std": 0.2}),
        ("gamma", {"prob": 1.0, "gamma_range": (2.0, 3.0)}),
        ("contrast", {"prob": 1.0, "contrast_range": (1.5, 2.0)}),
        ("blur", {"prob": 1.0, "sigma_range": (1.0, 2.0)}),
    ],
)
def test_intensity_augmentations_change_only_the_image(name: str, params: dict[str, Any]) -> None:
    sample = blobs((48, 48))
    out = build(name, **params)(sample, np.random.default_rng(0))
    assert not np.allclose(out["image"], sample["image"])
    assert out["image"].dtype == np.float32
    assert np.array_equal(out["target/seg"], sample["target/seg"])
    assert np.array_equal(out["weight/seg"], sample["weight/seg"])


@pytest.mark.parametrize("name", ["flip", "rot90", "affine", "gaussian_noise", "blur"])
def test_augmentations_are_a_function_of_the_generator(name: str) -> None:
    transform = build(name, prob=0.5)
    draws = [
        transform(blobs((32, 32)), np.random.default_rng(seed)) for seed in (7, 7, 8, 9, 10, 11)
    ]
    assert all(np.array_equal(draws[0][k], draws[1][k]) for k in KEYS)
    assert any(not np.array_equal(draws[0]["image"], d["image"]) for d in draws[2:])


def test_prob_zero_leaves_the_sample_alone() -> None:
    sample = blobs((32, 32))
    for name in ("flip", "rot90", "affine", "gaussian_noise", "gamma", "contrast", "blur"):
        out = build(name, prob=0.0)(sample, np.random.default_rng(0))
        assert all(np.array_equal(out[k], sample[k]) for k in KEYS), name


def test_rot90_keeps_non_square_patches_their_shape() -> None:
    sample = {k: v[:, :, :40] for k, v in blobs((64, 64)).items()}
    for seed in range(5):
        out = build("rot90", prob=1.0)(sample, np.random.default_rng(seed))
        assert out["image"].shape == (1, 64, 40)


def test_flip_axes_are_spatial_axis_numbers() -> None:
    sample = blobs((16, 16))
    out = build("flip", prob=1.0, axes=[1])(sample, np.random.default_rng(0))
    assert np.array_equal(out["image"], sample["image"][:, :, ::-1])
    with pytest.raises(UserError, match="spatial axis numbers"):
        build("flip", axes=[2])


def test_monai_dictionary_transform_by_name() -> None:
    transform = build("monai", transform="RandGaussianSmoothd", args={"prob": 1.0})
    sample = blobs((32, 32))
    out = transform(sample, np.random.default_rng(0))
    again = transform(blobs((32, 32)), np.random.default_rng(0))
    assert not np.allclose(out["image"], sample["image"])
    assert np.array_equal(out["image"], again["image"])
    assert np.array_equal(out["target/seg"], sample["target/seg"])  # intensity: image only


def test_monai_spatial_transform_interpolates_labels_as_nearest() -> None:
    transform = build("monai", transform="RandRotated", args={"range_x": 0.5, "prob": 1.0})
    out = transform(blobs((48, 48)), np.random.default_rng(1))
    assert set(np.unique(out["target/seg"])) <= {0.0, 1.0}
    assert (out["target/seg"] == (out["image"] > 0.5)).mean() > 0.97


def test_monai_rejects_names_outside_monai_transforms() -> None:
    with pytest.raises(UserError, match="did you mean 'RandFlipd'"):
        build("monai", transform="RandFlipdd")
    with pytest.raises(UserError, match=r"not one of the MONAI transforms.*RandFlipd"):
        build("monai", transform="RandFlip")
    with pytest.raises(UserError, match=r"not one of the MONAI transforms"):
        build("monai", transform="os.system")
    with pytest.raises(UserError, match="RandGaussianSmoothd"):
        build("monai", transform="RandGaussianSmoothd", args={"no_such_option": 1})


@pytest.mark.parametrize("name", ["LoadImaged", "RandLambdad", "RandTorchVisiond", "Lambdad"])
def test_monai_transforms_that_load_or_call_by_name_are_refused(name: str) -> None:
    with pytest.raises(UserError, match=f"'{name}' is not one of the MONAI transforms"):
        build("monai", transform=name, args={"reader": "os.system", "func": "os.system"})


@pytest.mark.parametrize(
    "args",
    [
        {"prob": 1.0, "mode": "os.system"},
        {"prob": 1.0, "mode": ["bilinear", "builtins:eval"]},
        {"prob": 1.0, "padding_mode": "../x"},
        {"prob": 1.0, "range_x": {"nested": 1}},
    ],
)
def test_monai_arguments_that_could_name_code_are_refused(args: dict) -> None:
    with pytest.raises(UserError, match=r"args\.\w+ .*plain words"):
        build("monai", transform="RandRotated", args=args)


def test_monai_transforms_may_not_change_the_patch_size() -> None:
    transform = build(
        "monai", transform="RandZoomd", args={"prob": 1.0, "min_zoom": 2.0, "max_zoom": 2.0,
                                              "keep_size": False},
    )  # fmt: skip
    with pytest.raises(UserError, match="changed the shape"):
        transform(blobs((16, 16)), np.random.default_rng(0))


@pytest.mark.parametrize("name", ["affine", "elastic"])
def test_a_regression_target_is_resampled_like_the_image_and_labels_as_nearest(
    name: str,
) -> None:
    from bioim2im.config import load_preset
    from bioim2im.data.preparation import augmentation, sample_keys

    # A semantic head and a regression head (whose target here equals the image).
    presets = Path(__file__).resolve().parents[2] / "presets"
    preset = load_preset(
        presets / "segmentation-2d.toml",
        [
            f"data.augment=[{{ name = '{name}', prob = 1.0 }}]",
            "model.heads.fluo={ name = 'conv', task = 'regression', loss = { name = 'mse' } }",
        ],
    )
    assert sample_keys(list(preset.model.heads)) == [
        "image", "target/seg", "target/fluo", "weight/seg", "weight/fluo",
    ]  # fmt: skip
    sample = blobs((64, 64))
    sample["target/fluo"] = sample["image"].copy()
    sample["weight/fluo"] = sample["weight/seg"].copy()
    compose = augmentation(preset, get_registry())
    assert compose is not None
    out = compose(sample, np.random.default_rng(3))

    assert not np.array_equal(out["image"], sample["image"])
    assert np.allclose(out["target/fluo"], out["image"], atol=1e-5)  # interpolated the same way
    assert set(np.unique(out["target/seg"])) <= {0.0, 1.0}
    assert set(np.unique(out["weight/seg"])) <= {0.0, 1.0}
