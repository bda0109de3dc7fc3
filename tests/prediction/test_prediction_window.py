"""Prediction sees what training saw: windows of the training patch's size by default.

The networks normalise features over the window they compute (instance norm), so an output
depends on the window's size: every shipped preset predicts with windows of its training patch,
and a prediction with the default window is the network run on each patch-sized window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bioim2im import predict
from bioim2im.builtins.presets import presets_dir
from bioim2im.config import load_preset
from bioim2im.config.loading import to_toml
from bioim2im.data.preparation import preparation
from bioim2im.data.synthetic import nuclei
from bioim2im.formats import load_model
from bioim2im.model.checkpoint import save_checkpoint
from bioim2im.model.network import build_model
from bioim2im.plugin.manager import get_registry

SHIPPED = sorted(path.stem for path in presets_dir().glob("*.toml"))


def untrained_checkpoint(preset_name: str, overrides: list[str], path: Path) -> Path:
    """A checkpoint of the preset's network with its initial (seeded) weights."""
    registry = get_registry()
    preset = load_preset(presets_dir() / f"{preset_name}.toml", overrides, registry)
    torch.manual_seed(0)
    network = build_model(preset, registry)
    save_checkpoint({"model": network.state_dict(), "preset": to_toml(preset)}, path)
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_predicts_with_windows_of_its_training_patch(
    name: str, tmp_path: Path
) -> None:
    model = load_model(untrained_checkpoint(name, [], tmp_path / "model.pt"))
    assert list(model.roi_size) == model.preset.data.patch_size


TINY = [
    "model.features=8",
    "model.backbone.channels=[8, 16]",
    "model.backbone.strides=[2]",
    "model.backbone.num_res_units=0",
    'model.heads.seg.postprocess=[{ name = "sigmoid" }]',
]


@pytest.mark.parametrize(
    ("preset_name", "patch", "shape"),
    [("segmentation-2d", [32, 32], (96, 64)), ("segmentation-3d", [8, 16, 16], (16, 32, 48))],
)
def test_the_default_window_predicts_as_the_network_does_on_each_training_sized_patch(
    preset_name: str, patch: list[int], shape: tuple[int, ...], tmp_path: Path
) -> None:
    overrides = [*TINY, f"data.patch_size={patch}", "predict.overlap=0"]
    checkpoint = untrained_checkpoint(preset_name, overrides, tmp_path / "model.pt")
    model = load_model(checkpoint)
    image, _ = nuclei(shape, seed=3)
    predicted = predict(checkpoint, image)["seg"][0]

    # The network on each patch-sized tile, as training ran it on patches.
    normalized = preparation(model.preset, model.registry).normalize(image[None])
    expected = np.zeros(shape, np.float32)
    starts = np.stack(
        np.meshgrid(*(range(0, n, p) for n, p in zip(shape, patch, strict=True)), indexing="ij")
    ).reshape(len(shape), -1)
    with torch.no_grad():
        for start in starts.T:
            tile = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
            logits = model.network(torch.from_numpy(normalized[(slice(None), *tile)])[None])
            expected[tile] = torch.sigmoid(logits["seg"])[0, 0].numpy()
    np.testing.assert_allclose(predicted, expected, atol=1e-5)

    # One window over the whole image normalises over other statistics: other outputs.
    whole = predict(checkpoint, image, overrides=[f"predict.roi_size={list(shape)}"])["seg"][0]
    assert np.abs(whole - expected).mean() > 100 * np.abs(predicted - expected).mean() + 1e-3
