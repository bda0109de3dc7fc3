"""Heads and losses declare which output channels are components of a vector along a spatial
axis (the ``directions`` extra); prediction's test-time augmentation negates them along the
axes it flips (see tests/prediction/test_tta_of_embedseg_offsets.py)."""

from __future__ import annotations

import pytest

from bioim2im import builtins, hookimpl
from bioim2im.config.loading import load_preset
from bioim2im.errors import UserError
from bioim2im.formats.trained_model import head_outputs
from bioim2im.plugin.manager import build_registry, get_registry


def flow_loss(*, spatial_dims: int = 2) -> object:
    """A stand-in loss training a flow: channel ``a`` moves along spatial axis ``a``."""
    return object()


class FlowPlugin:
    @staticmethod
    @hookimpl
    def bioim2im_register_losses(registry) -> None:
        registry.add("flow", flow_loss, directions=lambda dims: {a: a for a in range(dims)})


def registry_with_flow():
    return build_registry(
        [*((m, "bioim2im", "0") for m in builtins.PLUGINS), (FlowPlugin, "bioim2im-flow", "1")]
    )


def flow_head(channels: int) -> str:
    return (
        f'model.heads.seg={{ name = "conv", task = "regression", out_channels = {channels}, '
        'loss = { name = "flow" }, postprocess = [], metrics = [] }'
    )


@pytest.mark.parametrize(
    ("preset", "directions"),
    [
        ("embedseg-2d", ((0, 0), (1, 1))),
        ("embedseg-3d", ((0, 0), (1, 1), (2, 2))),
        ("instance-2d", ((0, 0), (1, 1))),
        ("segmentation-2d", ()),
    ],
)
def test_the_embedseg_offsets_are_vectors_along_their_axes(preset: str, directions) -> None:
    loaded = load_preset(preset, ['data.path="data"'])
    assert head_outputs(loaded, get_registry())["seg"].geometry.directions == directions


def test_a_losss_directions_reach_any_head_trained_with_it() -> None:
    registry = registry_with_flow()
    loaded = load_preset("restoration-2d", ['data.path="data"', flow_head(3)], registry)
    assert head_outputs(loaded, registry)["seg"].geometry.directions == ((0, 0), (1, 1))


def test_directions_beyond_the_heads_channels_are_refused() -> None:
    with pytest.raises(UserError) as info:
        load_preset("restoration-2d", ['data.path="data"', flow_head(1)], registry_with_flow())
    assert (
        "model.heads.seg: loss 'flow' makes channels [0, 1] vector components along axes [0, 1], "
        "but the head has 1 output channels in 2D"
    ) in str(info.value)
