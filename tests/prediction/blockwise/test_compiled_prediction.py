"""``predict.compile``: full window batches run through ``torch.compile`` when asked, or, with
"auto", when the batches left at the measured eager time save more than compiling costs (what
compiling saves: part of the time outside the convolutions, measured on the same batch); a
network that does not compile runs eagerly after one warning. The clocks are counters and the
compiler a stand-in, except in the one test that compiles for real."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from bioim2im.prediction.blockwise import layout as layout_module
from bioim2im.prediction.blockwise.layout import COMPILE_SAVES, COMPILE_SECONDS, Layout
from bioim2im.prediction.blockwise.runner import predict_array

BATCH = (4, 1, 16, 16)


class Clock:
    def __init__(self) -> None:
        self.cpu = 0.0

    def module(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(perf_counter=lambda: self.cpu, process_time=lambda: self.cpu)


class CostlyConvolution(nn.Conv2d):
    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__(1, 2, 3, padding=1)
        self.clock, self.seconds = clock, seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.cpu += self.seconds
        return super().forward(x)


class Costly(nn.Module):
    """A network whose eager batches advance the clock by ``seconds``, of which ``convolution``
    in its convolution."""

    def __init__(self, clock: Clock, seconds: float, convolution: float = 0.0) -> None:
        super().__init__()
        self.conv = CostlyConvolution(clock, convolution)
        self.clock, self.seconds = clock, seconds - convolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.cpu += self.seconds
        return self.conv(x)


class StandIn:
    """What ``torch.compile`` returns here: the module, counting its calls, its batches costing
    ``factor`` times the eager ones on ``clock``."""

    def __init__(self, fails: bool = False, clock: Clock | None = None, factor: float = 1.0):
        self.compiled: list[nn.Module] = []
        self.calls = 0
        self.fails = fails
        self.clock, self.factor = clock, factor

    def __call__(self, module: nn.Module, **options: object):  # type: ignore[no-untyped-def]
        self.compiled.append(module)

        def run(x: torch.Tensor) -> torch.Tensor:
            if self.fails:
                raise RuntimeError("no C++ compiler\nmore detail")
            self.calls += 1
            before = self.clock.cpu if self.clock is not None else 0.0
            out = module(x)
            if self.clock is not None:
                self.clock.cpu = before + self.factor * (self.clock.cpu - before)
            return out

        return run


def run_batches(
    monkeypatch,
    choice,
    seconds: float,
    batches: int,
    fails: bool = False,
    convolution: float = 0.0,
    factor: float = 0.5,
    images: int = 1,
):  # type: ignore[no-untyped-def]
    clock = Clock()
    compiler = StandIn(fails, clock, factor)
    monkeypatch.setattr(layout_module, "time", clock.module())
    monkeypatch.setattr(layout_module.torch, "compile", compiler)
    model = Costly(clock, seconds, convolution).eval()
    for _ in range(images):  # the images of one command: one model, a Layout each
        chooser = Layout(
            model, 2, torch.device("cpu"), False, BATCH[0], compile=choice, batches=batches
        )
        with torch.inference_mode():
            for _ in range(batches):
                with chooser.timed(BATCH) as network:
                    network(torch.zeros(BATCH))
    return compiler


def test_auto_compiles_when_the_batches_left_save_more_than_compiling_costs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seconds = 1.0
    worth = int(COMPILE_SECONDS / (COMPILE_SAVES * seconds)) + 10
    compiler = run_batches(monkeypatch, "auto", seconds, worth)
    assert len(compiler.compiled) == 1
    # The first batch ran eagerly (timed), one compiled on zeros, then every other batch.
    assert compiler.calls == 1 + worth - 1


def test_auto_goes_back_to_eager_when_the_compiled_batches_are_not_faster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "auto" compiles on an estimate of what compiling saves; the first compiled batches
    check it: one to warm up, then the best of two must cost less than the eager batch did,
    or the rest run eagerly, for this image and the command's next ones."""
    seconds = 1.0
    worth = int(COMPILE_SECONDS / (COMPILE_SAVES * seconds)) + 10
    same = run_batches(monkeypatch, "auto", seconds, worth, factor=1.0, images=2)
    assert len(same.compiled) == 1  # compiled once, not again for the second image
    assert same.calls == 1 + 3  # on zeros, then the three batches that checked it
    slower = run_batches(monkeypatch, "auto", seconds, worth, factor=1.5)
    assert slower.calls == 1 + 3
    faster = run_batches(monkeypatch, "auto", seconds, worth, factor=0.9, images=2)
    assert len(faster.compiled) == 1
    assert faster.calls == 1 + (worth - 1) + worth  # kept, and reused for the second image


def test_auto_does_not_compile_a_small_image(monkeypatch: pytest.MonkeyPatch) -> None:
    seconds = 1.0
    few = int(COMPILE_SECONDS / (COMPILE_SAVES * seconds)) - 2
    assert run_batches(monkeypatch, "auto", seconds, few).compiled == []
    assert run_batches(monkeypatch, False, seconds, 1000).compiled == []


def test_auto_counts_only_the_time_outside_the_convolutions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compiling fuses what lies between the convolutions: a batch spending 90 % of its time in
    them is worth compiling only for ten times as many batches as one spending none."""
    seconds = 1.0
    worth_without = int(COMPILE_SECONDS / (COMPILE_SAVES * seconds)) + 10
    mostly = run_batches(monkeypatch, "auto", seconds, worth_without, convolution=0.9)
    assert mostly.compiled == []
    worth = int(COMPILE_SECONDS / (COMPILE_SAVES * 0.1 * seconds)) + 10
    assert len(run_batches(monkeypatch, "auto", seconds, worth, convolution=0.9).compiled) == 1
    assert run_batches(monkeypatch, "auto", seconds, worth, convolution=1.0).compiled == []


def test_true_compiles_whatever_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = run_batches(monkeypatch, True, 0.001, 3)
    assert len(compiler.compiled) == 1 and compiler.calls == 1 + 3


def test_a_network_that_does_not_compile_runs_eagerly_after_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
        compiler = run_batches(monkeypatch, True, 0.001, 5, fails=True)
    assert len(compiler.compiled) == 1  # tried once, not per batch


def test_a_compiled_network_predicts_what_the_eager_one_does() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.InstanceNorm2d(4), nn.Tanh(), nn.Conv2d(4, 2, 1)
    ).eval()
    image = np.random.default_rng(0).random((1, 40, 52), dtype=np.float32)
    options = dict(roi_size=(16, 16), out_channels={"out": 2}, batch_size=4)
    eager = predict_array(net, image, compile=False, **options)["out"]
    compiled = predict_array(net, image, compile=True, **options)["out"]
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_the_warning_names_the_compiler_backends_own_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dynamo wraps a backend's failure in BackendCompilerFailed, whose first line is only
    "backend='...' raised:": the warning gives the backend's error instead."""

    def failing_backend(graph: torch.fx.GraphModule, inputs: list) -> None:
        raise RuntimeError("no C++ compiler")

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **k: compile_(m, backend=failing_backend))
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh()).eval()
    image = np.zeros((1, 24, 24), dtype=np.float32)
    options = dict(roi_size=(16, 16), out_channels={"out": 2}, batch_size=4)
    with pytest.warns(
        RuntimeWarning, match=r"torch.compile failed \(RuntimeError: no C\+\+ compiler\)"
    ):
        compiled = predict_array(net, image, compile=True, **options)["out"]
    np.testing.assert_allclose(compiled, predict_array(net, image, compile=False, **options)["out"])
