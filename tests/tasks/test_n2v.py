"""n2v-2d end to end (Noise2Void): trained on noisy images alone, it denoises them; and the
``n2v_mask`` augmentation that makes the blind spots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from task_helpers import (
    PRESETS,
    images,
    percentile_normalized,
    tiny,
    train_and_predict,
    write_images,
)

from bioim2im.errors import UserError
from bioim2im.evaluation import evaluate
from bioim2im.metrics.regression import psnr
from bioim2im.plugin.manager import get_registry

KEYS = ["image", "target/restored", "weight/restored"]


def mask(**params: object):
    return get_registry().get("transform", "n2v_mask").build(params, spatial_dims=2, keys=KEYS)


def test_n2v_mask_hides_a_few_pixels_behind_neighbours_and_trains_only_on_them() -> None:
    image = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
    weight = np.ones((1, 64, 64), np.float32)
    weight[:, :, :32] = 0.5
    sample = {"image": image, "target/restored": image.copy(), "weight/restored": weight}

    out = mask(fraction=0.01)(sample, np.random.default_rng(1))

    masked = out["weight/restored"] > 0
    assert masked.sum() == round(0.01 * 64 * 64)
    assert np.array_equal(out["weight/restored"][masked], weight[masked])  # times the cost map
    changed = out["image"] != image
    assert np.array_equal(changed, masked)
    assert np.array_equal(out["target/restored"], image)  # the target keeps the true pixels
    # Each hidden pixel now shows another pixel of its 5x5 neighbourhood.
    for _, y, x in zip(*np.nonzero(masked), strict=True):
        box = image[0, max(0, y - 2) : y + 3, max(0, x - 2) : x + 3]
        assert out["image"][0, y, x] in box
    again = mask(fraction=0.01)(sample, np.random.default_rng(1))
    assert np.array_equal(again["image"], out["image"])


def test_n2v_mask_must_be_the_last_augmentation(tmp_path: Path) -> None:
    from bioim2im.config import load_preset
    from bioim2im.data.preparation import augmentation

    preset = load_preset(
        Path(__file__).resolve().parents[2] / "presets" / "n2v-2d.toml",
        ['data.augment=[{ name = "n2v_mask" }, { name = "flip" }]'],
    )
    with pytest.raises(UserError, match="'n2v_mask' must be the last augmentation"):
        augmentation(preset, get_registry())


@pytest.mark.slow
def test_n2v_2d_denoises_without_clean_images(synthetic, tmp_path: Path) -> None:
    data, held_out = synthetic("restoration", (64, 64))  # trains on IM/ alone
    size = ["data.patch_size=[64, 64]", "data.batch_size=4", "predict.roi_size=[64, 64]"]
    # n2v2_unet has no residual units to remove.
    overrides = [o for o in tiny(data, 100, *size) if "num_res_units" not in o]
    run = train_and_predict("n2v-2d", overrides, held_out, tmp_path)
    # Nothing clean to validate against: no validation split, the final weights are the model.
    assert json.loads((run.run_dir / "split.json").read_text())["val"] == {}

    # The model estimates the noise-free image on the noisy input's scale.
    noisy, clean = images(held_out / "IM"), images(held_out / "GT")
    truths = {k: percentile_normalized(clean[k], reference=noisy[k]) for k in clean}
    report = evaluate(
        run.predictions, write_images(tmp_path / "truth", truths, "YX"), head="restored"
    )
    baseline = np.mean([psnr(percentile_normalized(noisy[k]), t) for k, t in truths.items()])
    assert report.aggregate["psnr"] > baseline + 2, (report.aggregate, baseline)


def test_n2v2_median_replacement_shows_the_median_of_the_neighbourhood() -> None:
    image = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    weight = np.ones((1, 32, 32), np.float32)
    sample = {"image": image, "target/restored": image.copy(), "weight/restored": weight}

    out = mask(fraction=0.01, window=3, replacement="median")(sample, np.random.default_rng(1))

    hidden = np.argwhere(out["weight/restored"][0] > 0)
    assert len(hidden) == round(0.01 * 32 * 32)
    for y, x in hidden:
        box = np.pad(image[0], 1, mode="reflect")[y : y + 3, x : x + 3].ravel()
        others = np.delete(box, 4)  # the pixel itself is not shown
        assert out["image"][0, y, x] == pytest.approx(np.median(others))


def test_struct_n2v_hides_a_line_of_pixels_along_the_noise_axis() -> None:
    """structN2V: noise correlated along X (stripes) cannot be read from the pixels left and
    right of a hidden pixel: they show random values too; nothing else changes."""
    image = np.random.default_rng(0).random((1, 40, 40), dtype=np.float32)
    weight = np.ones((1, 40, 40), np.float32)
    sample = {"image": image, "target/restored": image.copy(), "weight/restored": weight}

    out = mask(fraction=0.0006, struct_axis=-1, struct_span=5)(sample, np.random.default_rng(2))

    ((y, x),) = np.argwhere(out["weight/restored"][0] > 0)  # one hidden pixel
    changed = np.argwhere(out["image"][0] != image[0])
    line = {(int(y), int(c)) for c in range(x - 2, x + 3) if 0 <= c < 40}
    assert {(int(a), int(b)) for a, b in changed} <= line
    assert len(changed) >= len(line) - 1  # a random value may equal the old one, barely
    assert out["image"].min() >= image.min() and out["image"].max() <= image.max()


def test_struct_axis_must_be_a_spatial_axis(tmp_path: Path) -> None:
    from bioim2im.config import load_preset

    preset = Path(__file__).resolve().parents[2] / "presets" / "n2v-2d.toml"
    with pytest.raises(UserError) as found:
        load_preset(preset, ['data.augment=[{ name = "n2v_mask", struct_axis = 2 }]'])
    assert "data.augment.0.struct_axis: 2 is not a spatial axis of 2D patches" in str(found.value)
    with pytest.raises(UserError) as found:
        load_preset(preset, ['data.augment=[{ name = "n2v_mask", struct_span = 4 }]'])
    assert "data.augment.0.struct_span: must be odd" in str(found.value)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_n2v_network_makes_no_periodic_texture(seed: int) -> None:
    """The n2v-2d preset's network, as initialised, maps a noisy image to an output without a
    texture that repeats with its downsampling's period: a strided U-Net's output has a grid
    (its transposed convolutions overlap unevenly, every second pixel), which Noise2Void
    training then keeps (a 4 % periodic peak in the benchmark's trained output). Spectrum test:
    the share of the output's energy in its strongest periodic component."""
    import torch

    from bioim2im.config import load_preset
    from bioim2im.data.synthetic import restoration_pair
    from bioim2im.metrics.regression import periodic_peak
    from bioim2im.model.network import build_model

    noisy, _ = restoration_pair((128, 128), seed=5)
    image = torch.from_numpy((noisy - noisy.mean()) / noisy.std())[None, None]
    torch.manual_seed(seed)
    network = build_model(load_preset(PRESETS / "n2v-2d.toml"), get_registry()).eval()
    with torch.no_grad():
        output = network(image)["restored"][0, 0].numpy()
    assert periodic_peak(output) < 0.01


def test_periodic_peak_finds_a_grid_and_not_noise() -> None:
    from scipy import ndimage

    from bioim2im.metrics.regression import periodic_peak

    rng = np.random.default_rng(0)
    noise = rng.normal(size=(160, 160))
    smooth = ndimage.gaussian_filter(rng.normal(size=(160, 160)), 2)
    stripes = 0.3 * np.cos(np.pi * np.arange(160))[:, None] * np.ones((1, 160))
    assert periodic_peak(noise) < 0.005
    assert periodic_peak(smooth / smooth.std()) < 0.01
    assert periodic_peak(noise + stripes) > 0.02
    assert periodic_peak(np.stack([noise, noise + stripes])) > 0.01  # 3D: plane by plane
