"""Heads map backbone features to a task's output shape."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from bioim2im.builtins import heads
from bioim2im.errors import UserError
from bioim2im.plugin.registry import ComponentRegistry, Registrar


def _registry() -> ComponentRegistry:
    registry = ComponentRegistry()
    heads.bioim2im_register_heads(Registrar(registry, "head", "bioim2im", "test"))
    return registry


REGISTRY = _registry()


def build(name: str, params: dict[str, Any], dims: int, channels: int = 4, out: int = 2) -> Any:
    return REGISTRY.get("head", name).build(
        params, spatial_dims=dims, in_channels=channels, out_channels=out
    )


@pytest.mark.parametrize("name", REGISTRY.names("head"))
def test_parameters_are_typed(name: str) -> None:
    fields = REGISTRY.get("head", name).params.model_fields
    assert all(field.annotation is not Any for field in fields.values())


def test_identity_returns_the_features() -> None:
    features = torch.randn(1, 4, 8, 8)
    assert build("identity", {}, 2)(features) is features


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    "params", [{}, {"kernel_size": 3}, {"kernel_size": 3, "hidden_channels": 8}]
)
def test_conv_keeps_the_size(params: dict[str, Any], dims: int) -> None:
    out = build("conv", params, dims)(torch.randn(2, 4, *[8] * dims))
    assert out.shape == (2, 2, *[8] * dims)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("upsample_mode", ["deconv", "pixelshuffle", "interpolate"])
def test_conv_upsamples(upsample_mode: str, dims: int) -> None:
    params = {"upsample": 2, "upsample_mode": upsample_mode, "hidden_channels": 4}
    out = build("conv", params, dims)(torch.randn(1, 4, *[6] * dims))
    assert out.shape == (1, 2, *[12] * dims)
    component = REGISTRY.get("head", "conv")
    assert component.extras["scale"](component.params.model_validate(params).model_dump()) == 2


def test_conv_rejects_other_kernel_sizes() -> None:
    with pytest.raises(UserError, match="kernel_size: Input should be 1 or 3"):
        build("conv", {"kernel_size": 5}, 2)


@pytest.mark.parametrize("mode", ["max", "mean", "learned"])
def test_projection_maps_3d_features_to_2d(mode: str) -> None:
    out = build("projection", {"mode": mode}, 3)(torch.randn(2, 4, 5, 8, 8))
    assert out.shape == (2, 2, 8, 8)


def test_projection_modes_agree_on_features_constant_along_z() -> None:
    features = torch.randn(1, 4, 1, 8, 8).expand(1, 4, 5, 8, 8)
    projections = [build("projection", {"mode": mode}, 3) for mode in ("max", "mean", "learned")]
    for projection in projections[1:]:
        projection.project.load_state_dict(projections[0].project.state_dict())
    outputs = [projection(features) for projection in projections]
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0])


def test_projection_learned_picks_the_plane_it_scores_highest() -> None:
    head = build("projection", {"mode": "learned"}, 3, channels=1, out=1)
    with torch.no_grad():
        head.score.weight.fill_(100.0)
        head.score.bias.zero_()
        head.project.weight.fill_(1.0)
        head.project.bias.zero_()
    features = torch.zeros(1, 1, 3, 2, 2)
    features[:, :, 1] = 1.0  # the bright plane
    torch.testing.assert_close(head(features), torch.ones(1, 1, 2, 2))


def test_projection_needs_3d_features() -> None:
    with pytest.raises(UserError, match="3D"):
        build("projection", {}, 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_a_pointwise_convolution_is_the_convolution_it_replaces(dims: int) -> None:
    """1x1 convolutions run as an einsum on the CPU: same values, gradients and state-dict."""
    from bioim2im.model.pointwise import make_pointwise

    conv = (torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d)(2, 3, kernel_size=1)
    block = torch.nn.Sequential(conv)
    reference = copy.deepcopy(block)
    make_pointwise(block)
    assert type(block[0]) is not type(conv)
    assert block.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(2, 2, *[5] * dims, requires_grad=True)
    ours, theirs = block(x), reference(x)
    torch.testing.assert_close(ours, theirs)
    (grad_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (grad_theirs,) = torch.autograd.grad(theirs.square().sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs)
    # A convolution with neighbours is left as it is.
    wide = torch.nn.Sequential(torch.nn.Conv2d(2, 2, kernel_size=3))
    assert type(make_pointwise(wide)[0]) is torch.nn.Conv2d


def test_a_built_model_runs_its_heads_1x1_convolutions_pointwise() -> None:
    from bioim2im.builtins.presets import presets_dir
    from bioim2im.config import load_preset
    from bioim2im.model.network import build_model
    from bioim2im.model.pointwise import PointwiseConv2d
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    preset = load_preset(presets_dir() / "segmentation-2d.toml", [], registry)
    head = build_model(preset, registry).heads["seg"]
    convolutions = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(isinstance(m, PointwiseConv2d) for m in convolutions)
