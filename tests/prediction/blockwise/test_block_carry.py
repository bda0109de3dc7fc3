"""Blocks carried along the first axis: slabs predict each window once, and still equal a
whole-image prediction, also when resuming or when blocks start no window of their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bioim2im.prediction.blockwise import plan_blocks, predict_array, predict_blocks
from bioim2im.prediction.blockwise.blocks import BlockPlan

RNG = np.random.default_rng(0)


class CountingNet(nn.Module):
    """A small conv net that counts the windows it is run on."""

    def __init__(self, ndim: int) -> None:
        super().__init__()
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        self.layers = nn.Sequential(conv(1, 4, 3, padding=1), nn.Tanh(), conv(4, 2, 3, padding=1))
        self.windows = 0
        self.eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.windows += len(x)
        return {"out": self.layers(x)}


def window_count(plan: BlockPlan) -> int:
    return int(np.prod([len(s) for s in plan.starts]))


@pytest.mark.parametrize(
    ("shape", "roi", "block"),
    [((60, 50), (16, 16), (8, 50)), ((20, 24, 30), (8, 12, 12), (4, 24, 30))],
)
def test_slabs_run_every_window_once_and_equal_a_whole_image_run(shape, roi, block) -> None:
    torch.manual_seed(0)
    net = CountingNet(len(shape))
    image = RNG.random((1, *shape), dtype=np.float32)
    options = dict(roi_size=roi, out_channels={"out": 2}, batch_size=3)
    whole = predict_array(net, image, block_size=shape, **options)["out"]
    net.windows = 0
    slabs = predict_array(net, image, block_size=block, **options)["out"]
    plan = plan_blocks(shape, roi, block_size=block)
    assert len(plan) > 4 and net.windows == window_count(plan)
    np.testing.assert_allclose(slabs, whole, atol=1e-5)


def test_a_block_after_a_skipped_one_starts_afresh() -> None:
    torch.manual_seed(1)
    net = CountingNet(2)
    image = RNG.random((1, 64, 40), dtype=np.float32)
    options = dict(roi_size=(16, 16), out_channels={"out": 2}, block_size=(8, 40))
    whole = predict_array(net, image, **{**options, "block_size": (64, 40)})["out"]
    plan = plan_blocks((64, 40), (16, 16), block_size=(8, 40))
    skipped = {2, 5}
    carried = [b.index for b in plan.blocks(set(range(len(plan))) - skipped) if b.carried]
    assert carried == [1, 4, 7]
    out = np.full_like(whole, np.nan)

    def sink(index: int, regions: dict, arrays: dict) -> None:
        out[regions["out"]] = arrays["out"]

    class Image:
        shape = image.shape

        @staticmethod
        def read(region: tuple[slice, ...]) -> np.ndarray:
            return image[region]

    predict_blocks(net, Image(), sink=sink, skip_blocks=skipped, **options)
    done = np.ones(64, bool)
    for index in skipped:
        done[plan.core(index)[0]] = False
    np.testing.assert_allclose(out[:, done], whole[:, done], atol=1e-5)
    assert np.isnan(out[:, ~done]).all()


def test_thin_blocks_that_start_no_window_finish_the_carried_sums() -> None:
    plan = plan_blocks((50, 20), (32, 16), 0.25, block_size=(4, 20))
    blocks = list(plan.blocks(range(len(plan))))
    assert any(b.n_windows == 0 for b in blocks)
    assert all(b.carried for b in blocks[1:])
    torch.manual_seed(2)
    net = CountingNet(2)
    image = RNG.random((1, 50, 20), dtype=np.float32)
    options = dict(roi_size=(32, 16), out_channels={"out": 2})
    whole = predict_array(net, image, block_size=(50, 20), **options)["out"]
    net.windows = 0
    thin = predict_array(net, image, block_size=(4, 20), **options)["out"]
    assert net.windows == window_count(plan)
    np.testing.assert_allclose(thin, whole, atol=1e-5)
