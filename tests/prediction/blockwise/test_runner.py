"""Block-wise sliding-window prediction: equal to a whole-image one, resumable, memory-bounded."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from monai.inferers import sliding_window_inference
from monai.networks.nets import BasicUNet
from torch import nn

from bioim2im.prediction.blockwise.blocks import HeadGeometry, plan_blocks
from bioim2im.prediction.blockwise.record import BlockProgress, load_finished_blocks
from bioim2im.prediction.blockwise.runner import blocks_in_flight, predict_array, predict_blocks
from bioim2im.prediction.blockwise.windows import gaussian_importance_map

RNG = np.random.default_rng(0)


class MultiHead(nn.Module):
    """A small conv trunk with a same-size head, a 2x-upsampling head and, in 3D, a Z projection."""

    def __init__(self, ndim: int, in_channels: int = 1, symmetric: bool = False) -> None:
        super().__init__()
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        self.ndim = ndim
        self.trunk = nn.Sequential(
            conv(in_channels, 6, 3, padding=1), nn.ReLU(), conv(6, 6, 3, padding=1), nn.Tanh()
        )
        self.seg = conv(6, 2, 1)
        self.up = conv(6, 1, 1)
        self.scale = (2, 2) if ndim == 2 else (1, 2, 2)
        if symmetric:
            # Kernels equal to their mirror images along every axis make the net flip-equivariant.
            with torch.no_grad():
                for layer in self.modules():
                    if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
                        weight = layer.weight
                        for axis in range(2, weight.ndim):
                            weight = (weight + weight.flip(axis)) / 2
                        layer.weight.copy_(weight)
        self.eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        up = nn.functional.interpolate(self.up(features), scale_factor=self.scale, mode="nearest")
        outputs = {"seg": self.seg(features), "up": up}
        if self.ndim == 3:
            outputs["proj"] = features[:, :3].mean(dim=2)
        return outputs


def heads_of(ndim: int) -> tuple[dict[str, int], dict[str, HeadGeometry]]:
    if ndim == 2:
        return {"seg": 2, "up": 1}, {"up": HeadGeometry(scale=(2, 2))}
    return {"seg": 2, "up": 1, "proj": 3}, {
        "up": HeadGeometry(scale=(1, 2, 2)),
        "proj": HeadGeometry(scale=(1, 1, 1), dropped_axes=(0,)),
    }


class Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values = torch.tensor([0.5, -2.0]).reshape(1, 2, *([1] * (x.ndim - 2)))
        return {"y": values.expand(x.shape[0], 2, *x.shape[2:]).clone()}


class ArrayImage:
    """An image with region reads that counts them, like a LazyImage over an array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape
        self.reads = 0

    def read(self, region: tuple[slice, ...] | None = None) -> np.ndarray:
        self.reads += 1
        return self.array[region]


def test_a_window_covering_the_image_equals_running_the_network_on_it() -> None:
    torch.manual_seed(0)
    net = BasicUNet(
        spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)
    ).eval()
    image = RNG.random((1, 32, 48), dtype=np.float32)
    tiled = predict_array(net, image, roi_size=(32, 48), out_channels={"out": 2})["out"]
    with torch.no_grad():
        whole = net(torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_tiled_prediction_equals_monais_sliding_window(blend: str) -> None:
    torch.manual_seed(0)
    net = BasicUNet(
        spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)
    ).eval()
    image = RNG.random((1, 64, 80), dtype=np.float32)
    # Window grids agree when the step divides the image: 64 = 32 + 2 * 16, 80 = 32 + 3 * 16.
    ours = predict_array(
        net,
        image,
        roi_size=(32, 32),
        overlap=0.5,
        blend=blend,
        out_channels={"out": 2},
        block_size=(16, 48),
    )["out"]
    weights = torch.from_numpy(gaussian_importance_map((32, 32))) if blend == "gaussian" else None
    with torch.no_grad():
        theirs = sliding_window_inference(
            torch.from_numpy(image)[None],
            (32, 32),
            3,
            net,
            overlap=0.5,
            mode="constant",
            roi_weight_map=weights,
        )
    np.testing.assert_allclose(ours, theirs[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_a_constant_network_gives_the_constant_everywhere(blend: str) -> None:
    image = RNG.random((1, 70, 9), dtype=np.float32)  # the second axis is shorter than the window
    out = predict_array(
        Constant(), image, roi_size=(16, 16), out_channels={"y": 2}, blend=blend, block_size=(12, 4)
    )["y"]
    assert out.shape == (2, 70, 9)
    # Up to rounding: the weights' sums are products of per-axis sums.
    np.testing.assert_allclose(out[0], 0.5, rtol=1e-6)
    np.testing.assert_allclose(out[1], -2.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("ndim", "shape", "roi", "block", "overlap"),
    [
        (2, (50, 45), (16, 16), (12, 20), 0.25),
        (2, (40, 33), (16, 12), (7, 9), 0.5),
        (3, (20, 30, 27), (8, 12, 12), (6, 10, 14), 0.25),
    ],
)
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_block_wise_prediction_equals_whole_image_prediction(
    ndim: int,
    shape: tuple[int, ...],
    roi: tuple[int, ...],
    block: tuple[int, ...],
    overlap: float,
    blend: str,
) -> None:
    torch.manual_seed(1)
    net = MultiHead(ndim, in_channels=2)
    image = RNG.random((2, *shape), dtype=np.float32)
    out_channels, geometry = heads_of(ndim)
    options = dict(
        roi_size=roi,
        overlap=overlap,
        blend=blend,
        out_channels=out_channels,
        head_geometry=geometry,
        batch_size=3,
    )
    assert len(plan_blocks(shape, roi, overlap, block_size=block)) > 4
    whole = predict_array(net, image, block_size=shape, **options)
    blocks = predict_array(net, image, block_size=block, **options)
    for head, channels in out_channels.items():
        expected = (channels, *geometry.get(head, HeadGeometry.same(ndim)).output_shape(shape))
        assert whole[head].shape == blocks[head].shape == expected
        np.testing.assert_allclose(blocks[head], whole[head], atol=1e-5, err_msg=head)


def test_channel_and_spatial_axes_may_come_in_any_order() -> None:
    torch.manual_seed(2)
    net = MultiHead(2, in_channels=2)
    image = RNG.random((2, 40, 36), dtype=np.float32)
    out_channels, geometry = heads_of(2)
    options = dict(
        roi_size=(16, 16), out_channels=out_channels, head_geometry=geometry, block_size=(16, 16)
    )
    channel_first = predict_array(net, image, **options)
    channel_last = predict_array(net, image.transpose(1, 2, 0), spatial_axes=(0, 1), **options)
    for head in out_channels:
        np.testing.assert_array_equal(channel_last[head], channel_first[head])


@pytest.mark.parametrize("ndim", [2, 3])
def test_tta_of_a_flip_equivariant_network_changes_nothing(ndim: int) -> None:
    torch.manual_seed(3)
    net = MultiHead(ndim, symmetric=True)
    shape = (37, 30) if ndim == 2 else (12, 21, 18)
    image = RNG.random((1, *shape), dtype=np.float32)
    out_channels, geometry = heads_of(ndim)
    options = dict(
        roi_size=(16,) * 2 if ndim == 2 else (8, 12, 12),
        out_channels=out_channels,
        head_geometry=geometry,
        block_size=(16,) * ndim,
    )
    plain = predict_array(net, image, **options)
    augmented = predict_array(net, image, tta=True, **options)
    for head in out_channels:
        np.testing.assert_allclose(augmented[head], plain[head], atol=1e-5, err_msg=head)


def test_tta_averages_the_unflipped_outputs_of_flipped_inputs() -> None:
    torch.manual_seed(4)
    net = MultiHead(2)
    image = RNG.random((1, 16, 24), dtype=np.float32)
    out_channels, geometry = heads_of(2)
    out = predict_array(
        net,
        image,
        roi_size=(16, 24),
        out_channels=out_channels,
        head_geometry=geometry,
        tta=[[1], [0, 1]],
    )
    x = torch.from_numpy(image)[None]
    with torch.no_grad():
        runs = [net(x), net(x.flip(3)), net(x.flip(2, 3))]
    for head in out_channels:
        expected = (runs[0][head] + runs[1][head].flip(3) + runs[2][head].flip(2, 3)) / 3
        np.testing.assert_allclose(out[head], expected[0].numpy(), atol=1e-5)


def test_an_image_smaller_than_the_window_is_reflection_padded() -> None:
    # A pointwise network sees only each voxel, so padding must not change any value.
    net = nn.Conv2d(1, 1, 1).eval()
    image = RNG.random((1, 5, 40), dtype=np.float32)
    out = predict_array(net, image, roi_size=(16, 16), out_channels={"y": 1})["y"]
    with torch.no_grad():
        expected = net(torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_autocast_runs_the_model_in_lower_precision() -> None:
    torch.manual_seed(5)
    net = MultiHead(2)
    image = RNG.random((1, 30, 30), dtype=np.float32)
    out_channels, geometry = heads_of(2)
    options = dict(roi_size=(16, 16), out_channels=out_channels, head_geometry=geometry)
    full = predict_array(net, image, **options)
    low = predict_array(net, image, amp_dtype=torch.bfloat16, **options)
    for head in out_channels:
        assert low[head].dtype == np.float32
        np.testing.assert_allclose(low[head], full[head], atol=0.05)
        assert not np.array_equal(low[head], full[head])


def test_an_interrupted_run_resumes_with_the_blocks_it_had_not_written(tmp_path: Path) -> None:
    torch.manual_seed(6)
    net = MultiHead(2)
    image = RNG.random((1, 48, 40), dtype=np.float32)
    options = dict(roi_size=(16, 16), out_channels={"seg": 2}, block_size=(16, 16), overlap=0.5)
    expected = predict_array(net, image, **options)["seg"]
    plan = plan_blocks((48, 40), (16, 16), 0.5, block_size=(16, 16))
    output = zarr.create_array(
        tmp_path / "out.zarr", shape=(2, 48, 40), chunks=(2, 16, 16), dtype="float32"
    )
    progress_file = tmp_path / "out.zarr" / "progress.json"
    progress = BlockProgress(progress_file, plan.fingerprint())

    def crashing_sink(index: int, regions: dict, arrays: dict) -> None:
        if len(progress.finished) == 3:
            raise RuntimeError("power cut")
        output[regions["seg"]] = arrays["seg"]
        progress.mark_done(index)

    with pytest.raises(RuntimeError, match="power cut"):
        predict_blocks(net, ArrayImage(image), sink=crashing_sink, **options)
    finished = load_finished_blocks(progress_file, plan.fingerprint())
    assert finished == {0, 1, 2}

    written = []
    resumed = BlockProgress(progress_file, plan.fingerprint())

    def sink(index: int, regions: dict, arrays: dict) -> None:
        output[regions["seg"]] = arrays["seg"]
        written.append(index)
        resumed.mark_done(index)

    reader = ArrayImage(image)
    predict_blocks(net, reader, sink=sink, skip_blocks=finished, **options)
    assert sorted(written) == sorted(set(range(len(plan))) - finished)
    # Only the blocks left are read (those whose windows all ran in earlier ones not even that).
    assert 0 < reader.reads <= len(plan) - 3
    np.testing.assert_allclose(output[:], expected, atol=1e-5)
    assert load_finished_blocks(progress_file, plan.fingerprint()) == set(range(len(plan)))
    assert load_finished_blocks(tmp_path / "missing.json") == set()
    # Blocks of another plan cover other regions: they do not count.
    other = plan_blocks((48, 40), (16, 16), 0.5, block_size=(32, 32)).fingerprint()
    assert load_finished_blocks(progress_file, other) == set()


@pytest.mark.parametrize("size", [48, 120])
def test_blocks_in_memory_stay_bounded_whatever_the_image_size(size: int) -> None:
    net = nn.Conv2d(1, 1, 3, padding=1).eval()
    image = ArrayImage(RNG.random((1, size, size), dtype=np.float32))
    written: list[int] = []
    most_in_flight = 0
    read = image.read

    def counting_read(region: tuple[slice, ...] | None = None) -> np.ndarray:
        nonlocal most_in_flight
        # A block lives from the moment its read starts until the sink has written it.
        most_in_flight = max(most_in_flight, image.reads + 1 - len(written))
        return read(region)

    def slow_sink(index: int, regions: dict, arrays: dict) -> None:
        time.sleep(0.002)  # let the reader run ahead as far as the queues allow
        written.append(index)

    calls: list[tuple[int, int]] = []
    image.read = counting_read  # type: ignore[method-assign]
    predict_blocks(
        net,
        image,
        roi_size=(8, 8),
        out_channels={"y": 1},
        sink=slow_sink,
        block_size=(8, 8),
        progress=lambda done, total: calls.append((done, total)),
    )
    n_blocks = (size // 8) ** 2
    assert sorted(written) == list(range(n_blocks))
    assert calls == [(i + 1, n_blocks) for i in range(n_blocks)]
    assert 1 <= most_in_flight <= blocks_in_flight(4)


def test_errors_in_any_stage_stop_the_pipeline_and_reach_the_caller() -> None:
    image = RNG.random((1, 64, 64), dtype=np.float32)
    threads_before = threading.active_count()

    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            raise RuntimeError("model failed")

    class Unreadable(ArrayImage):
        def read(self, region: tuple[slice, ...] | None = None) -> np.ndarray:
            if self.reads == 2:
                raise OSError("disk failed")
            return super().read(region)

    options = dict(roi_size=(16, 16), out_channels={"y": 1}, block_size=(16, 16))
    with pytest.raises(RuntimeError, match="model failed"):
        predict_blocks(Broken(), ArrayImage(image), sink=lambda *a: None, **options)
    with pytest.raises(OSError, match="disk failed"):
        predict_blocks(nn.Conv2d(1, 1, 1), Unreadable(image), sink=lambda *a: None, **options)
    with pytest.raises(ValueError, match="shape"):
        predict_array(nn.Conv2d(1, 3, 1), image, **options)
    with pytest.raises(ValueError, match="lack heads"):
        predict_array(MultiHead(2), image, roi_size=(16, 16), out_channels={"seg": 2, "other": 1})
    assert threading.active_count() == threads_before
