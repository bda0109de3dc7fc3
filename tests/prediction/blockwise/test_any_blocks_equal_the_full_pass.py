"""Any set of blocks predicted on its own (a cluster task, what an interrupted run left) gets the
values one pass over every block gives, bit for bit, with a network whose outputs depend on the
other windows of their batch and on the order sums are added in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_runner import ArrayImage, MultiHead, heads_of
from torch import nn

from bioim2im.prediction.blockwise.blocks import plan_blocks
from bioim2im.prediction.blockwise.replay import full_pass
from bioim2im.prediction.blockwise.runner import predict_blocks


class BatchMixing(nn.Module):
    """MultiHead plus a little of the batch's mean input: a window's output changes with the
    other windows of its batch, as oneDNN's and cuDNN's may in their last bits."""

    def __init__(self, ndim: int) -> None:
        super().__init__()
        self.inner = MultiHead(ndim)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.inner(x)
        shift = 1e-3 * x.mean(dim=0, keepdim=True).mean()
        return {head: value + shift for head, value in outputs.items()}


def predict(net, image, plan, batch_size, skip=(), exact=False):
    ndim = len(plan.shape)
    channels, geometry = heads_of(ndim)
    outputs = {}

    def sink(index, regions, arrays):
        for head, values in arrays.items():
            outputs[index, head] = values

    predict_blocks(
        net,
        ArrayImage(image),
        plan=plan,
        out_channels=channels,
        head_geometry=geometry,
        sink=sink,
        batch_size=batch_size,
        channels_last=False,
        skip_blocks=skip,
        exact=exact,
    )
    return outputs


CASES = [
    # shape, window, block, overlap
    ((70, 90), (16, 16), (16, 24), 0.25),  # blocks about one window: neighbours two away feed
    ((64, 80), (16, 16), (8, 8), 0.5),  # blocks smaller than the window
    ((40, 48), (40, 16), (40, 16), 0.25),  # one axis a single window
    ((12, 30, 34), (4, 8, 8), (12, 8, 16), 0.25),
]


@pytest.mark.parametrize(("shape", "window", "block", "overlap"), CASES)
@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_any_blocks_get_the_values_of_the_full_pass(shape, window, block, overlap, batch_size):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    ndim = len(shape)
    net = BatchMixing(ndim)
    image = rng.normal(size=shape).astype(np.float32)
    # The 3D network's projection head drops Z: blocks span it.
    plan = plan_blocks(shape, window, overlap, block, whole_axes=(0,) if ndim == 3 else ())
    everything = predict(net, image, plan, batch_size)
    n = len(plan)
    order = plan.sweep_order()
    chosen_sets = [
        {order[0]},
        {order[-1]},
        {order[n // 2]},
        set(order[n // 3 : 2 * n // 3]),
        set(rng.choice(n, size=max(1, n // 3), replace=False).tolist()),
        set(range(0, n, 2)),
    ]
    for chosen in chosen_sets:
        alone = predict(net, image, plan, batch_size, skip=set(range(n)) - chosen, exact=True)
        assert {index for index, _ in alone} == chosen
        for key, values in alone.items():
            assert values.tobytes() == everything[key].tobytes(), (chosen, key)


def test_blocks_predicted_on_their_own_differ_without_exact():
    """The reason for the replay: the network above tells batches apart."""
    torch.manual_seed(0)
    net = BatchMixing(2)
    image = np.random.default_rng(1).normal(size=(70, 90)).astype(np.float32)
    plan = plan_blocks((70, 90), (16, 16), 0.25, (16, 24))
    everything = predict(net, image, plan, 4)
    middle = plan.sweep_order()[len(plan) // 2]
    alone = predict(net, image, plan, 4, skip=set(range(len(plan))) - {middle})
    assert any(alone[key].tobytes() != everything[key].tobytes() for key in alone)


def test_the_batches_of_the_pass_follow_the_runners_loop():
    """Partial batches arise where many blocks run few windows; the plan of batches knows them."""
    plan = plan_blocks((64, 256), (64, 16), 0.25, (64, 4))  # blocks narrower than the stride
    passed = full_pass(plan, 4)
    counts = np.diff(passed.offsets)
    assert 0 in counts and len(passed.segments) > 2


def test_a_task_after_a_face_runs_again_one_row_of_windows_in_whole_batches():
    """Cutting a wide volume across its first sweep axis (as a cluster's two tasks do) costs the
    second task the row of windows that cross the face, and the batches they run in: the windows
    each block hands on across that face are the last it runs, together."""
    from bioim2im.prediction.blockwise.replay import plan_replay

    plan = plan_blocks((128, 1024, 1024), (32, 128, 128), 0.25, block_size=(128, 256, 256))
    assert plan.sweep[0] == 1 and plan.grid == (1, 4, 4)
    batch_size = 4
    passed = full_pass(plan, batch_size)
    total = int(passed.offsets[-1])
    order = plan.sweep_order()
    first, second = order[:8], order[8:]  # rows 0-1 and rows 2-3 along Y: one face, at Y=512
    runs = [sum(len(b) for b in plan_replay(plan, batch_size, task)[1]) for task in (first, second)]
    crossing = [s for s in plan.starts[1] if s < 512 < s + 128]  # the row crossing the face
    one_row = len(crossing) * len(plan.starts[0]) * len(plan.starts[2])
    feeders = plan.grid[2]  # the blocks of row 1, each a run of needed windows
    assert one_row == 55
    assert total + one_row <= sum(runs) <= total + one_row + 2 * (batch_size - 1) * feeders
