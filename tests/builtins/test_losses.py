"""Losses: cost-map masking, weighting, agreement with MONAI, and that they can be minimized."""

from __future__ import annotations

from typing import Any

import monai.losses
import pytest
import torch

from bioim2im.builtins import losses
from bioim2im.builtins._losses import Classes, CrossEntropy
from bioim2im.errors import UserError
from bioim2im.plugin.registry import ComponentRegistry, Registrar


def _registry() -> ComponentRegistry:
    registry = ComponentRegistry()
    losses.bioim2im_register_losses(Registrar(registry, "loss", "bioim2im", "test"))
    return registry


REGISTRY = _registry()
NAMES = REGISTRY.names("loss")
CHANNELS = 3

# Parameters and target convention of each loss for the tests below. A loss without an entry
# fails test_every_loss_has_a_case.
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "dice": ({"softmax": True, "to_onehot_y": True}, "indices"),
    "dice_ce": ({"softmax": True, "to_onehot_y": True, "class_weights": [1, 2, 1]}, "indices"),
    "dice_focal": ({"sigmoid": True, "include_background": False}, "masks"),
    "focal": ({"softmax": True, "to_onehot_y": True, "alpha": 0.25}, "indices"),
    "tversky": ({"sigmoid": True, "alpha": 0.3, "beta": 0.7}, "masks"),
    "generalized_dice": ({"softmax": True, "to_onehot_y": True}, "indices"),
    "bce": ({"pos_weight": [1.0, 2.0, 3.0]}, "masks"),
    "ce": ({"class_weights": [1.0, 2.0, 0.5], "label_smoothing": 0.1}, "indices"),
    "mse": ({}, "values"),
    "l1": ({}, "values"),
    "smooth_l1": ({"beta": 0.5}, "values"),
    "ssim": ({"win_size": 5}, "values"),
}


def build(name: str, params: dict[str, Any] | None = None) -> Any:
    return REGISTRY.get("loss", name).build(
        CASES[name][0] if params is None else params, spatial_dims=2
    )


def make_target(kind: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    batch, channels, *spatial = shape
    if kind == "indices":
        return torch.randint(0, channels, (batch, 1, *spatial), generator=generator).float()
    if kind == "masks":
        return (torch.rand(shape, generator=generator) > 0.5).float()
    if kind == "masks_onehot":
        indices = torch.randint(0, channels, (batch, *spatial), generator=generator)
        return torch.nn.functional.one_hot(indices, channels).movedim(-1, 1).float()
    return torch.rand(shape, generator=generator)


def loss_and_grad(
    loss: Any, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    prediction = prediction.clone().requires_grad_(True)
    value = loss(prediction, target, weight)
    (grad,) = torch.autograd.grad(value, prediction)
    return value.detach(), grad


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_every_loss_has_a_case() -> None:
    assert set(NAMES) <= set(CASES)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_are_typed(name: str) -> None:
    fields = REGISTRY.get("loss", name).params.model_fields
    assert all(field.annotation is not Any for field in fields.values())


@pytest.mark.parametrize("name", NAMES)
def test_zero_weight_pixels_do_not_count(name: str, generator: torch.Generator) -> None:
    loss = build(name)
    shape = (2, CHANNELS, 16, 16)
    prediction = torch.randn(shape, generator=generator)
    target = make_target(CASES[name][1], shape, generator)
    weight = torch.ones(2, 1, 16, 16)
    weight[:, :, 2:9, 3:12] = 0.0
    weight[:, :, 12:, :] = 2.5
    masked = weight == 0

    # Anything may lie under a zero weight: other predictions, NaN targets.
    other_prediction = torch.where(masked, torch.randn(shape, generator=generator), prediction)
    other_target = torch.where(masked, torch.nan, target)

    value, grad = loss_and_grad(loss, prediction, target, weight)
    other_value, other_grad = loss_and_grad(loss, other_prediction, other_target, weight)
    torch.testing.assert_close(other_value, value)
    torch.testing.assert_close(other_grad, grad)
    assert not grad.masked_select(masked.expand(shape)).any()


@pytest.mark.parametrize("name", NAMES)
def test_uniform_weights_change_nothing(name: str, generator: torch.Generator) -> None:
    loss = build(name)
    shape = (2, CHANNELS, 16, 16)
    prediction = torch.randn(shape, generator=generator)
    target = make_target(CASES[name][1], shape, generator)
    weighted = loss(prediction, target, torch.full((2, 1, 16, 16), 3.0))
    # Equal up to the smoothing terms of the overlap losses, which do not scale with the weights.
    torch.testing.assert_close(weighted, loss(prediction, target), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(NAMES) - {"ssim"}))  # SSIM looks at neighbourhoods
def test_a_weight_of_two_counts_a_pixel_twice(name: str, generator: torch.Generator) -> None:
    loss = build(name)
    shape = (1, CHANNELS, 1, 10)
    prediction = torch.randn(shape, generator=generator)
    target = make_target(CASES[name][1], shape, generator)
    weight = torch.ones(1, 1, 1, 10)
    weight[..., 0] = 2.0
    repeated = [0, *range(10)]
    torch.testing.assert_close(
        loss(prediction, target, weight),
        loss(prediction[..., repeated], target[..., repeated]),
    )


@pytest.mark.parametrize("name", NAMES)
def test_all_zero_weights_give_zero(name: str, generator: torch.Generator) -> None:
    shape = (2, CHANNELS, 8, 8)
    target = make_target(CASES[name][1], shape, generator)
    value, grad = loss_and_grad(build(name), torch.randn(shape), target, torch.zeros(2, 1, 8, 8))
    assert value == 0
    assert not grad.any()


@pytest.mark.parametrize("name", NAMES)
def test_minimizing_fits_the_target(name: str, generator: torch.Generator) -> None:
    loss = build(name)
    shape = (1, CHANNELS, 16, 16)
    target = make_target(CASES[name][1], shape, generator)
    prediction = torch.zeros(shape, requires_grad=True)
    optimizer = torch.optim.Adam([prediction], lr=0.1)
    initial = loss(prediction, target).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss(prediction, target).backward()
        optimizer.step()
    assert loss(prediction, target).item() < 0.5 * initial


AGREES_WITH_MONAI = [
    ("dice", {"softmax": True, "to_onehot_y": True}, monai.losses.DiceLoss, "indices"),
    (
        "dice",
        {"softmax": True, "to_onehot_y": True, "include_background": False, "batch": True},
        monai.losses.DiceLoss,
        "indices",
    ),
    ("dice", {"sigmoid": True, "jaccard": True}, monai.losses.DiceLoss, "masks"),
    ("tversky", {"sigmoid": True, "alpha": 0.3, "beta": 0.7}, monai.losses.TverskyLoss, "masks"),
    (
        "generalized_dice",
        {"softmax": True, "to_onehot_y": True},
        monai.losses.GeneralizedDiceLoss,
        "indices",
    ),
    (
        "generalized_dice",
        {"sigmoid": True, "batch": True},
        monai.losses.GeneralizedDiceLoss,
        "masks",
    ),
    (
        "dice_ce",
        {"softmax": True, "to_onehot_y": True, "label_smoothing": 0.1},
        monai.losses.DiceCELoss,
        "indices",
    ),
    ("dice_focal", {"sigmoid": True, "gamma": 1.5}, monai.losses.DiceFocalLoss, "masks"),
    # Without label smoothing, Dice and CE share one softmax (a faster path).
    ("dice_ce", {"softmax": True, "to_onehot_y": True}, monai.losses.DiceCELoss, "indices"),
    ("dice_ce", {"softmax": True, "lambda_ce": 0.5}, monai.losses.DiceCELoss, "masks_onehot"),
]


@pytest.mark.parametrize(("name", "params", "monai_loss", "kind"), AGREES_WITH_MONAI)
def test_agrees_with_monai_without_weights(
    name: str, params: dict[str, Any], monai_loss: Any, kind: str, generator: torch.Generator
) -> None:
    shape = (2, CHANNELS, 12, 12)
    prediction = torch.randn(shape, generator=generator)
    target = make_target(kind, shape, generator)
    torch.testing.assert_close(
        build(name, params)(prediction, target), monai_loss(**params)(prediction, target)
    )


def test_class_weights_agree_with_monai(generator: torch.Generator) -> None:
    shape = (2, CHANNELS, 12, 12)
    prediction = torch.randn(shape, generator=generator)
    target = make_target("masks", shape, generator)
    ours = build("dice", {"sigmoid": True, "class_weights": [1.0, 2.0, 3.0]})
    theirs = monai.losses.DiceLoss(sigmoid=True, weight=[1.0, 2.0, 3.0])
    torch.testing.assert_close(ours(prediction, target), theirs(prediction, target))
    ours = build("focal", {"sigmoid": True, "alpha": 0.25, "class_weights": [1.0, 2.0, 3.0]})
    theirs = monai.losses.FocalLoss(alpha=0.25, weight=[1.0, 2.0, 3.0])
    torch.testing.assert_close(ours(prediction, target), theirs(prediction, target))


def test_ce_ignores_out_of_range_labels_under_zero_weight(generator: torch.Generator) -> None:
    prediction = torch.randn(1, CHANNELS, 4, 4, generator=generator)
    target = make_target("indices", (1, CHANNELS, 4, 4), generator)
    weight = torch.ones(1, 1, 4, 4)
    weight[..., 0, :] = 0
    ignored = target.clone()
    ignored[..., 0, :] = 255
    loss = build("ce", {})
    torch.testing.assert_close(loss(prediction, ignored, weight), loss(prediction, target, weight))


def test_mse_is_the_weighted_mean_over_pixels_and_channels() -> None:
    prediction = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]]).reshape(1, 2, 1, 2)
    weight = torch.tensor([1.0, 3.0]).reshape(1, 1, 1, 2)
    expected = (1 * 1 + 3 * 4 + 0 + 0) / (2 * (1 + 3))
    assert build("mse")(prediction, torch.zeros_like(prediction), weight).item() == expected


def test_ssim_is_zero_for_identical_images(generator: torch.Generator) -> None:
    image = torch.rand(1, 1, 16, 16, 16, generator=generator)
    assert build("ssim")(image, image).abs().item() < 1e-5


@pytest.mark.parametrize("activation", [{}, {"sigmoid": True, "softmax": True}])
def test_an_activation_must_be_chosen(activation: dict[str, bool]) -> None:
    with pytest.raises(UserError, match="exactly one of sigmoid"):
        build("dice", activation)


def test_label_smoothing_needs_softmax() -> None:
    with pytest.raises(UserError, match="label_smoothing"):
        build("dice_ce", {"sigmoid": True, "label_smoothing": 0.1})


def test_ssim_window_must_be_odd() -> None:
    with pytest.raises(UserError, match="odd"):
        build("ssim", {"win_size": 6})


def test_mismatched_target_shape_is_explained() -> None:
    with pytest.raises(ValueError, match="class indices"):
        build("dice", {"softmax": True})(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize(
    ("params", "kind"),
    [
        ({"softmax": True, "to_onehot_y": True, "class_weights": [1.0, 2.0, 0.5]}, "indices"),
        ({"softmax": True, "include_background": False, "lambda_dice": 2.0}, "masks_onehot"),
        ({"softmax": True, "class_weights": [3.0, 1.0, 1.0], "batch": True}, "masks_onehot"),
    ],
)
def test_dice_ce_on_one_softmax_is_dice_plus_ce(
    params: dict[str, Any], kind: str, generator: torch.Generator
) -> None:
    """The shared-softmax Dice + CE gives the value and gradient of its two terms summed."""
    shape = (2, CHANNELS, 10, 12)
    prediction = torch.randn(shape, generator=generator)
    target = make_target(kind, shape, generator)
    weight = torch.rand((2, CHANNELS, 10, 12), generator=generator).round()
    dice_params = {k: v for k, v in params.items() if not k.startswith("lambda")}
    weights = params.get("class_weights")
    classes = Classes(params.get("to_onehot_y", False), True, weights and tuple(weights))
    dice, ce = build("dice", dice_params), CrossEntropy(classes)
    lambdas = params.get("lambda_dice", 1.0), params.get("lambda_ce", 1.0)
    fused = build("dice_ce", params)
    assert type(fused).__name__ == "SoftmaxDiceCrossEntropy"

    def separate(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        return lambdas[0] * dice(p, t, w) + lambdas[1] * ce(p, t, w)

    # Class indices take one map for all classes; one-hot targets one per class too.
    maps = (None, weight[:, :1]) if kind == "indices" else (None, weight, weight[:, :1])
    for w in maps:
        value, grad = loss_and_grad(fused, prediction, target, w)
        expected, expected_grad = loss_and_grad(separate, prediction, target, w)
        torch.testing.assert_close(value, expected)
        torch.testing.assert_close(grad, expected_grad)
