"""Sums handed on between blocks: a pass predicts each window once, whatever the block shape and
sweep order, and still equals a whole-image prediction, also when resuming or when blocks start
no window of their own; the sums in hand stay a thin sheet across the image."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from bioim2im.prediction.blockwise import plan_blocks, predict_array, predict_blocks
from bioim2im.prediction.blockwise.blocks import BlockPlan, bounding_box

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


def touched(plan: BlockPlan, indices: set[int]) -> int:
    """Windows touching the core of any of the blocks ``indices``."""
    starts = set()
    for index in indices:
        starts |= set(itertools.product(*plan.touching(index)))
    return len(starts)


@pytest.mark.parametrize(
    ("shape", "roi", "block", "sweep"),
    [
        ((60, 50), (16, 16), (8, 50), None),
        ((60, 50), (16, 16), (12, 20), None),
        ((60, 50), (16, 16), (12, 20), (1, 0)),
        ((20, 24, 30), (8, 12, 12), (4, 24, 30), None),
        ((20, 24, 30), (8, 12, 12), (8, 10, 14), None),
        ((20, 24, 30), (8, 12, 12), (8, 10, 14), (2, 0, 1)),
        ((9, 40, 35), (16, 12, 12), (9, 8, 16), None),  # the first axis shorter than the window
    ],
)
def test_a_pass_runs_every_window_once_and_equals_a_whole_image_run(
    shape, roi, block, sweep
) -> None:
    torch.manual_seed(0)
    net = CountingNet(len(shape))
    image = RNG.random((1, *shape), dtype=np.float32)
    options = dict(roi_size=roi, out_channels={"out": 2}, batch_size=3)
    whole = predict_array(net, image, block_size=shape, **options)["out"]
    plan = plan_blocks(shape, roi, block_size=block, sweep=sweep)
    net.windows = 0
    out = np.full_like(whole, np.nan)

    def sink(index: int, regions: dict, arrays: dict) -> None:
        out[regions["out"]] = arrays["out"]

    predict_blocks(net, ArrayImage(image), plan=plan, sink=sink, **options)
    assert len(plan) > 4 and net.windows == window_count(plan)
    np.testing.assert_allclose(out, whole, atol=1e-5)


class ArrayImage:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        return self.array[region]


@pytest.mark.parametrize("block", [(8, 40), (16, 16)])
def test_blocks_next_to_skipped_ones_run_the_windows_they_share_again(block) -> None:
    torch.manual_seed(1)
    net = CountingNet(2)
    image = RNG.random((1, 64, 40), dtype=np.float32)
    options = dict(roi_size=(16, 16), out_channels={"out": 2}, block_size=block)
    whole = predict_array(net, image, **{**options, "block_size": (64, 40)})["out"]
    plan = plan_blocks((64, 40), (16, 16), block_size=block)
    skipped = {2, 5}
    todo = set(range(len(plan))) - skipped
    out = np.full_like(whole, np.nan)

    def sink(index: int, regions: dict, arrays: dict) -> None:
        out[regions["out"]] = arrays["out"]

    net.windows = 0
    predict_blocks(net, ArrayImage(image), sink=sink, skip_blocks=skipped, **options)
    # Every window touching a block of the pass runs, once: none of the skipped blocks' own.
    assert net.windows == touched(plan, todo) < window_count(plan) + 1
    done = np.zeros((64, 40), bool)
    for index in todo:
        done[plan.core(index)] = True
    np.testing.assert_allclose(out[:, done], whole[:, done], atol=1e-5)
    assert np.isnan(out[:, ~done]).all()


def test_thin_blocks_that_start_no_window_finish_the_carried_sums() -> None:
    plan = plan_blocks((50, 20), (32, 16), 0.25, block_size=(4, 20))
    blocks = list(plan.blocks(range(len(plan))))
    assert any(b.n_windows == 0 for b in blocks)
    torch.manual_seed(2)
    net = CountingNet(2)
    image = RNG.random((1, 50, 20), dtype=np.float32)
    options = dict(roi_size=(32, 16), out_channels={"out": 2})
    whole = predict_array(net, image, block_size=(50, 20), **options)["out"]
    net.windows = 0
    thin = predict_array(net, image, block_size=(4, 20), **options)["out"]
    assert net.windows == window_count(plan)
    np.testing.assert_allclose(thin, whole, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "roi", "block", "first"),
    [
        ((128, 1024, 1024), (32, 128, 128), (32, 128, 128), 1),  # wide: sweep along Y first
        ((512, 512, 512), (32, 128, 128), (32, 128, 128), 0),  # deep: along Z first
        ((16384, 16384), (256, 256), (1024, 1024), 0),
    ],
)
def test_the_sums_in_hand_stay_a_sheet_about_one_window_thick(shape, roi, block, first) -> None:
    plan = plan_blocks(shape, roi, 0.25, block_size=block)
    assert plan.sweep[0] == first
    # As the runner holds them: one box per face of a block, grown to hold what arrives.
    in_hand: dict[tuple[int, int], tuple[slice, ...]] = {}
    most = 0
    for b in plan.blocks(range(len(plan))):
        in_hand = {key: box for key, box in in_hand.items() if key[0] != b.index}
        for target, face, region in b.hands_on:
            in_hand[target, face] = bounding_box(in_hand.get((target, face), region), region)
        most = max(most, sum(math.prod(r.stop - r.start for r in box) for box in in_hand.values()))
    cross_section = math.prod(shape) // shape[first]
    assert most <= 1.2 * roi[first] * cross_section
    assert most < math.prod(shape) / 4
