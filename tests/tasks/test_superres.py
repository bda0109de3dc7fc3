"""superres-3d end to end: an upsampling head predicts finer voxels than the input's; the data
pipeline draws each target patch at the scaled coordinates of its input patch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import zoom
from task_helpers import (
    PRESETS,
    fitted,
    images,
    percentile_normalized,
    tiny,
    train_and_predict,
    write_images,
)

from bioim2im.evaluation import evaluate
from bioim2im.metrics.regression import psnr

# Anisotropic data: only Z is upsampled.
ONLY_Z = ["model.heads.highres.upsample=[2, 1, 1]", "model.heads.highres.hidden_channels=8"]


@pytest.mark.parametrize("upsample", [[2, 1, 1], [2, 2, 2]])
def test_target_patches_are_drawn_at_the_scaled_coordinates(
    tmp_path: Path, upsample: list[int]
) -> None:
    from bioim2im.config import load_preset
    from bioim2im.data.datasets import training_datasets

    # Every coarse voxel holds its own coordinates; the fine target repeats it `upsample` times.
    coarse = np.arange(6 * 10 * 12, dtype=np.float32).reshape(6, 10, 12)
    fine = coarse
    for axis, factor in enumerate(upsample):
        fine = np.repeat(fine, factor, axis=axis)
    for name in ("a", "b"):
        write_images(tmp_path / "IM", {name: coarse}, "ZYX")
        write_images(tmp_path / "GT", {name: fine}, "ZYX")
    identity = '{ name = "fixed_range", min = 0.0, max = 1.0 }'
    preset = load_preset(
        PRESETS / "superres-3d.toml",
        [
            f"data.path={tmp_path}",
            "data.patch_size=[4, 8, 16]",  # X larger than the image: padded
            "data.augment=[]",
            f"data.normalize={identity}",
            f"model.heads.highres.target_normalize={identity}",
            f"model.heads.highres.upsample={upsample}",
        ],
    )
    train, val = training_datasets(preset, tmp_path / "run")
    assert val is not None
    for dataset in (train, val):
        for index in range(8):
            sample = dataset.sample(index)
            image, target = sample["image"], sample["target/highres"]
            assert target.shape == (1, *(4 * upsample[0], 8 * upsample[1], 16 * upsample[2]))
            expected = image
            for axis, factor in enumerate(upsample, start=1):
                expected = np.repeat(expected, factor, axis=axis)
            # Inside the image the target repeats the input; the padding is 0 (reflected input).
            inside = sample["weight/highres"] > 0
            assert np.array_equal(target[inside], expected[inside])
            assert inside.sum() == np.prod([4, 8, 12]) * np.prod(upsample)


def test_the_conv_head_upsamples_each_axis_by_its_factor() -> None:
    import torch

    from bioim2im.errors import UserError
    from bioim2im.plugin.manager import get_registry

    conv = get_registry().get("head", "conv")
    for mode in ("deconv", "interpolate"):
        head = conv.build(
            {"upsample": [4, 1, 2], "upsample_mode": mode},
            spatial_dims=3,
            in_channels=8,
            out_channels=1,
        )
        assert head(torch.zeros(1, 8, 3, 5, 6)).shape == (1, 1, 12, 5, 12)
    with pytest.raises(UserError, match="pixelshuffle' needs the same factor"):
        conv.build(
            {"upsample": [2, 1, 1], "upsample_mode": "pixelshuffle"},
            spatial_dims=3,
            in_channels=8,
            out_channels=1,
        )


@pytest.mark.slow
def test_superres_3d_beats_linear_upsampling(synthetic, tmp_path: Path) -> None:
    data, held_out = synthetic("superres", (16, 64, 64), n_images=6, scale=[2, 1, 1])
    size = ["data.patch_size=[8, 32, 32]", "data.batch_size=4", "predict.roi_size=[8, 64, 64]"]
    run = train_and_predict("superres-3d", tiny(data, 60, *ONLY_Z, *size), held_out, tmp_path)

    coarse, fine = images(held_out / "IM"), images(held_out / "GT")
    assert images(run.predictions, "_highres")["img_000"].shape == (16, 64, 64)
    truths = {k: percentile_normalized(f) for k, f in fine.items()}
    report = evaluate(
        run.predictions, write_images(tmp_path / "truth", truths, "ZYX"), head="highres"
    )
    # Linear interpolation of the input, at its best brightness and contrast.
    baseline = np.mean(
        [
            psnr(fitted(zoom(coarse[k], (2, 1, 1), order=1, mode="nearest", grid_mode=True), t), t)
            for k, t in truths.items()
        ]
    )
    assert report.aggregate["psnr"] > baseline + 1, (report.aggregate, baseline)
