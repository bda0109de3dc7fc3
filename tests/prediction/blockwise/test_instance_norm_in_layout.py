"""In channels-last prediction, instance normalisation works in its input's layout (torch's own
copies a channels-last input to contiguous and back) and gives torch's values: 2D and 3D, with
and without an affine map, inside a MONAI residual U-Net; training and the contiguous layout
keep torch's forward, and restoring the layout gives it back."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from bioim2im.prediction.blockwise.layout import Layout


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("affine", [False, True])
def test_a_residual_unet_predicts_torchs_values_channels_last(dims: int, affine: bool) -> None:
    torch.manual_seed(0)
    network = UNet(
        spatial_dims=dims,
        in_channels=1,
        out_channels=2,
        channels=(8, 16, 32),
        strides=(2, 2),
        num_res_units=2,
        norm=("instance", {"affine": affine}),
    ).eval()
    if affine:  # not the identity map torch starts from
        for layer in network.modules():
            if isinstance(layer, nn.modules.instancenorm._InstanceNorm):
                nn.init.uniform_(layer.weight, 0.5, 1.5)
                nn.init.uniform_(layer.bias, -0.5, 0.5)
    batch = torch.randn(3, 1, *([12, 16, 20][-dims:])) * 5 + 3
    norms = [m for m in network.modules() if isinstance(m, nn.modules.instancenorm._InstanceNorm)]
    with torch.inference_mode():
        expected = network(batch)  # torch's own forward, contiguous
        layout = Layout(network, dims, torch.device("cpu"), True, batch_size=3)
        assert norms and all("forward" in vars(m) for m in norms)
        with layout.timed(tuple(batch.shape)) as model:
            prepared = layout.prepare(batch)
            out = model(prepared)
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)
    layout.restore()
    assert not any("forward" in vars(m) for m in norms)
    assert all(p.is_contiguous() for p in network.parameters())


def test_training_and_running_statistics_keep_torchs_forward() -> None:
    torch.manual_seed(0)
    tracked = nn.InstanceNorm3d(4, track_running_stats=True)
    plain = nn.InstanceNorm3d(4)
    network = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), tracked, plain).eval()
    layout = Layout(network, 3, torch.device("cpu"), True, batch_size=2)
    assert "forward" not in vars(tracked) and "forward" in vars(plain)
    batch = torch.randn(2, 4, 6, 8, 8).contiguous(memory_format=torch.channels_last_3d)
    network.train()
    expected = nn.functional.instance_norm(batch, eps=plain.eps)
    assert torch.equal(plain(batch), expected)  # torch's forward, bit for bit
    layout.restore()
