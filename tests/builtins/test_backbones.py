"""Every registered backbone builds in 2D and 3D and keeps the input's spatial size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from bioim2im.builtins import backbones
from bioim2im.errors import UserError
from bioim2im.plugin.registry import ComponentRegistry, Registrar


def _registry() -> ComponentRegistry:
    registry = ComponentRegistry()
    backbones.bioim2im_register_backbones(Registrar(registry, "backbone", "bioim2im", "test"))
    return registry


REGISTRY = _registry()
NAMES = REGISTRY.names("backbone")

# The smallest settings of each backbone, by spatial dims. A backbone without an entry fails
# test_every_backbone_has_tiny_settings.
TINY: dict[str, Callable[[int], dict[str, Any]]] = {
    "unet": lambda dims: {"channels": [4, 8, 8], "num_res_units": 1},
    "n2v2_unet": lambda dims: {"channels": [4, 8, 8]},
    "attention_unet": lambda dims: {"channels": [4, 8, 8]},
    "basic_unet": lambda dims: {"features": [4, 4, 4, 4, 4, 4]},
    "dynunet": lambda dims: {"filters": [4, 8, 8]},
    "segresnet": lambda dims: {"init_filters": 4, "num_groups": 2, "blocks_down": [1, 1, 1]},
    "unetr": lambda dims: {
        "img_size": [32] * dims,
        "feature_size": 4,
        "hidden_size": 16,
        "mlp_dim": 16,
        "num_heads": 2,
    },
    "swin_unetr": lambda dims: {
        "feature_size": 12,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 1, 1],
        "window_size": 4,
    },
}


def _input_size(name: str, params: dict[str, Any]) -> int:
    if name == "unetr":
        return int(params["img_size"][0])
    component = REGISTRY.get("backbone", name)
    divisor = component.extras["divisor"](component.params.model_validate(params).model_dump())
    # Twice the divisor: instance norm needs more than one pixel at the deepest level.
    return 2 * int(divisor)


def test_every_backbone_has_tiny_settings() -> None:
    assert set(NAMES) <= set(TINY)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_output_has_out_channels_and_input_size(name: str, dims: int) -> None:
    params = TINY[name](dims)
    net = REGISTRY.get("backbone", name).build(
        params, spatial_dims=dims, in_channels=2, out_channels=3
    )
    size = _input_size(name, params)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, *[size] * dims))
    assert out.shape == (1, 3, *[size] * dims)


@pytest.mark.parametrize("name", NAMES)
def test_trains_in_2d(name: str) -> None:
    params = TINY[name](2)
    net = REGISTRY.get("backbone", name).build(
        params, spatial_dims=2, in_channels=1, out_channels=2
    )
    size = _input_size(name, params)
    net(torch.randn(2, 1, size, size)).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_are_typed(name: str) -> None:
    fields = REGISTRY.get("backbone", name).params.model_fields
    assert all(field.annotation is not Any for field in fields.values())


@pytest.mark.parametrize(
    ("name", "params", "divisor"),
    [
        ("unet", {}, 8),
        ("unet", {"channels": [8, 16, 32], "strides": [2, 3]}, 6),
        ("unet", {"channels": [8, 16, 32], "strides": [[1, 2, 2], 2]}, (2, 4, 4)),
        ("unet", {"channels": [8, 16, 32], "strides": [[1, 2], [3, 2]]}, (3, 4)),
        ("n2v2_unet", {}, 4),
        ("n2v2_unet", {"strides": [[1, 2, 2], [2, 2, 2]]}, (2, 4, 4)),
        ("attention_unet", {"channels": [8, 16]}, 2),
        ("basic_unet", {}, 16),
        ("dynunet", {}, 8),
        ("dynunet", {"filters": [8, 16, 32, 64, 128]}, 16),
        ("segresnet", {}, 8),
        ("unetr", {"img_size": [64, 64]}, 16),
        ("swin_unetr", {}, 32),
        ("swin_unetr", {"patch_size": 1}, 1),
    ],
)
def test_divisor(name: str, params: dict[str, Any], divisor: int) -> None:
    component = REGISTRY.get("backbone", name)
    assert (
        component.extras["divisor"](component.params.model_validate(params).model_dump()) == divisor
    )


def test_unet_divisor_is_what_the_network_needs() -> None:
    net = REGISTRY.get("backbone", "unet").build(
        {"channels": [4, 8, 8], "strides": [2, 3], "num_res_units": 0},
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
    )
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 12, 18)).shape == (1, 1, 12, 18)


def test_unetr_input_size_is_img_size() -> None:
    component = REGISTRY.get("backbone", "unetr")
    params = component.params.model_validate({"img_size": [32, 64]}).model_dump()
    assert component.extras["input_size"](params) == (32, 64)


@pytest.mark.parametrize(
    ("name", "params", "dims"),
    [
        ("unet", {"channels": [8, 16, 32], "strides": [2]}, 2),
        ("unet", {"channels": [8]}, 2),
        ("unet", {"channels": [8, 16, 32], "strides": [[1, 2, 2], 2]}, 2),
        ("unet", {"channels": [8, 16, 32], "strides": [[1, 2], [1, 2, 2]]}, 3),
        ("n2v2_unet", {"channels": [8, 16, 32], "strides": [[1, 2, 2], 2]}, 2),
        ("dynunet", {"filters": [8, 16]}, 2),
        ("dynunet", {"filters": [8, 16, 32], "strides": [1, 2]}, 2),
        ("segresnet", {"blocks_down": [1, 2, 2], "blocks_up": [1]}, 2),
        ("unetr", {"img_size": [32, 32]}, 3),
        ("unetr", {"img_size": [32, 40]}, 2),
    ],
)
def test_inconsistent_parameters_are_user_errors(
    name: str, params: dict[str, Any], dims: int
) -> None:
    with pytest.raises(UserError):
        REGISTRY.get("backbone", name).build(
            params, spatial_dims=dims, in_channels=1, out_channels=1
        )


@pytest.mark.parametrize("name", ["unet", "n2v2_unet"])
def test_anisotropic_strides_keep_a_coarse_z(name: str) -> None:
    """Strides given per axis ([1, 2, 2]: Z kept at the first level) build a network that takes
    sizes divisible per axis and keeps them."""
    params = {"channels": [4, 8, 8], "strides": [[1, 2, 2], [2, 2, 2]]}
    net = REGISTRY.get("backbone", name).build(
        params, spatial_dims=3, in_channels=1, out_channels=2
    )
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 6, 12, 20)).shape == (1, 2, 6, 12, 20)
