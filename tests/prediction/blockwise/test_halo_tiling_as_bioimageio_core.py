"""Halo tiling writes each voxel from one window, the later one where two windows' interiors
overlap: the tiling of bioimageio.core's blockwise prediction (blocks of a fixed size, inner
parts at 0, inner, 2 x inner, ..., the last one moved back to end at the image's end, padded
by the halo with numpy's ``symmetric``, later blocks overwriting earlier ones). A network whose
output depends on the whole window (instance normalisation) then gives the same values as that
tiling written out here by hand, whatever the blocks bioim2im holds in memory; a head that
projects Z away keeps the last window along Z, which core's last block writes over the others."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from bioim2im.prediction.blockwise.blocks import HeadGeometry
from bioim2im.prediction.blockwise.runner import predict_array

RNG = np.random.default_rng(3)


class WindowDependent(nn.Module):
    """Instance-normalised features: every output depends on the whole window."""

    def __init__(self, ndim: int) -> None:
        super().__init__()
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        norm = nn.InstanceNorm2d if ndim == 2 else nn.InstanceNorm3d
        self.trunk = nn.Sequential(conv(1, 4, 3, padding=1), norm(4), nn.Tanh())
        self.seg = conv(4, 2, 1)
        self.up = conv(4, 1, 1)
        self.scale = (2,) * ndim
        self.eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        up = nn.functional.interpolate(self.up(features), scale_factor=self.scale, mode="nearest")
        outputs = {"seg": self.seg(features), "up": up}
        if x.ndim == 5:  # a head that projects Z away
            outputs["proj"] = features[:, :2].amax(dim=2)
        return outputs


def blocks_as_core_tiles(
    net: nn.Module, image: np.ndarray, roi: tuple[int, ...], halo: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """bioimageio.core's blockwise prediction of ``image`` (C, *spatial), written out."""
    shape = image.shape[1:]
    per_axis = []
    for s, r, h in zip(shape, roi, halo, strict=True):
        inner = r - 2 * h
        per_axis.append([min(p, s - inner) for p in range(0, s, inner)])
    padded = np.pad(image, [(0, 0), *((h, h) for h in halo)], mode="symmetric")
    seg = np.zeros((2, *shape), np.float32)
    up = np.zeros((1, *(2 * s for s in shape)), np.float32)
    proj = np.zeros((2, *shape[1:]), np.float32)
    for starts in itertools.product(*per_axis):
        window = padded[(slice(None), *(slice(p, p + r) for p, r in zip(starts, roi, strict=True)))]
        with torch.no_grad():
            out = net(torch.from_numpy(np.ascontiguousarray(window))[None])
        inner = [r - 2 * h for r, h in zip(roi, halo, strict=True)]
        src = tuple(slice(h, h + n) for h, n in zip(halo, inner, strict=True))
        dst = tuple(slice(p, p + n) for p, n in zip(starts, inner, strict=True))
        seg[(slice(None), *dst)] = out["seg"][0].numpy()[(slice(None), *src)]
        up_src = tuple(slice(2 * s.start, 2 * s.stop) for s in src)
        up_dst = tuple(slice(2 * d.start, 2 * d.stop) for d in dst)
        up[(slice(None), *up_dst)] = out["up"][0].numpy()[(slice(None), *up_src)]
        if "proj" in out:  # written over by each block along Z: the last one's stays
            proj[(slice(None), *dst[1:])] = out["proj"][0].numpy()[(slice(None), *src[1:])]
    return {"seg": seg, "up": up, **({"proj": proj} if len(shape) == 3 else {})}


@pytest.mark.parametrize(
    ("shape", "roi", "halo", "blocks"),
    [
        ((50, 45), (16, 16), (4, 4), [(12, 20), (50, 45), (7, 9)]),
        ((37, 64), (24, 16), (6, 2), [(16, 16), (37, 64)]),
        ((13, 30, 27), (8, 12, 12), (2, 3, 3), [(6, 10, 14), (13, 30, 27)]),
    ],
)
def test_halo_tiling_is_bioimageio_cores_blockwise_prediction(
    shape: tuple[int, ...],
    roi: tuple[int, ...],
    halo: tuple[int, ...],
    blocks: list[tuple[int, ...]],
) -> None:
    torch.manual_seed(0)
    ndim = len(shape)
    net = WindowDependent(ndim)
    image = RNG.random((1, *shape), dtype=np.float32) * np.linspace(0.2, 3, shape[-1])
    expected = blocks_as_core_tiles(net, image.astype(np.float32), roi, halo)
    channels, geometry = {"seg": 2, "up": 1}, {"up": HeadGeometry(scale=(2,) * ndim)}
    if ndim == 3:
        channels["proj"] = 2
        geometry["proj"] = HeadGeometry(scale=(1, 1, 1), dropped_axes=(0,))
    for block in blocks:
        found = predict_array(
            net,
            image.astype(np.float32),
            roi_size=roi,
            out_channels=channels,
            head_geometry=geometry,
            halo=halo,
            align=1,
            block_size=block,
            batch_size=3,
        )
        for head in expected:
            np.testing.assert_allclose(
                found[head], expected[head], atol=1e-5, err_msg=(head, block)
            )
