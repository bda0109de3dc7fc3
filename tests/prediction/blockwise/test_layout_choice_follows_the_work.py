"""``channels_last = "auto"`` keeps the layout whose batches cost less CPU time on the CPU, not
the one the wall clock favours: on a shared machine the wall clock follows the neighbours' load.
The clocks are replaced by counters that each batch advances by known amounts (no timing)."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from bioim2im.prediction.blockwise import layout as layout_module
from bioim2im.prediction.blockwise.layout import Layout

BATCH = (2, 3, 4, 8, 8)


class Clocks:
    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def module(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(perf_counter=lambda: self.wall, process_time=lambda: self.cpu)


class Costs(nn.Module):
    """A 3D convolution whose batches advance the clocks by what its current layout costs."""

    def __init__(self, clocks: Clocks, costs: dict[bool, tuple[float, float]]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 2, 3, padding=1)
        self.clocks = clocks
        self.costs = costs  # channels-last -> (wall seconds, CPU seconds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = not self.conv.weight.is_contiguous()
        wall, cpu = self.costs[channels_last]
        self.clocks.wall += wall
        self.clocks.cpu += cpu
        return self.conv(x)


def choose(monkeypatch: pytest.MonkeyPatch, costs: dict[bool, tuple[float, float]]) -> bool:
    clocks = Clocks()
    monkeypatch.setattr(layout_module, "time", clocks.module())
    model = Costs(clocks, costs).eval()
    chooser = Layout(model, 3, torch.device("cpu"), "auto", batch_size=BATCH[0])
    batch = torch.zeros(BATCH)
    with torch.inference_mode():
        while chooser.measuring:
            with chooser.timed(BATCH) as network:
                network(chooser.prepare(batch))
    chosen = chooser.chosen
    assert chosen is not None
    chooser.restore()
    return chosen


def test_the_layout_costing_less_cpu_time_is_kept_though_the_wall_clock_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Channels-last looks faster by the wall clock (the neighbours were idle during its
    # batches) but costs more CPU time: contiguous is kept.
    assert choose(monkeypatch, {False: (2.0, 2.0), True: (1.0, 3.0)}) is False


def test_channels_last_is_kept_where_it_costs_less_cpu_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert choose(monkeypatch, {False: (1.0, 2.0), True: (3.0, 1.5)}) is True
