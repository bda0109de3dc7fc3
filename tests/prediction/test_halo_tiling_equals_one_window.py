"""`predict.halo`: a window-independent network (batch normalisation) tiled with a halo gives
every voxel the value one window over the whole image gives it, whatever the window, block and
image sizes (the tiling bioimageio.core's blockwise prediction does); the blended windows do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from predict_helpers import nuclei_image

from bioim2im.io import open_image
from segmentation_runs import segmentation_run

PRESETS = Path(__file__).resolve().parents[2] / "presets"
TINY = [
    "data.patch_size=[32, 32]",
    "predict.roi_size=[32, 32]",
    "model.features=4",
    "model.backbone.channels=[4, 8]",
    "model.backbone.strides=[2]",
    "model.backbone.num_res_units=0",
    "model.backbone.norm=batch",
    'model.heads.seg.postprocess=[{name = "sigmoid"}]',
]


def probabilities(run: Path, images: Path, out: Path, *overrides: str) -> dict[str, np.ndarray]:
    from bioim2im.prediction.job import predict_files

    predict_files(run, str(images), out, format="tiff", overrides=overrides, progress=False)
    return {p.name: open_image(p).read() for p in sorted(out.glob("*.tif"))}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return segmentation_run(tmp_path_factory.mktemp("bn"), *TINY)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    nuclei_image(folder / "wide.tif", (96, 136), seed=4)
    nuclei_image(folder / "odd.tif", (45, 71), seed=5)
    return folder


def test_halo_tiling_equals_one_window_over_the_whole_image(
    run: Path, images: Path, tmp_path: Path
) -> None:
    # One window over the whole image mirrored by the halo.
    whole = probabilities(
        run, images, tmp_path / "whole", 'predict.halo="auto"', "predict.roi_size=[512, 512]"
    )
    assert set(whole) == {"wide_seg.tif", "odd_seg.tif"}
    for name, roi, block in (("a", 32, 40), ("b", 48, 64), ("c", 16, 24)):
        found = probabilities(
            run,
            images,
            tmp_path / name,
            'predict.halo="auto"',
            f"predict.roi_size=[{roi}, {roi}]",
            f"predict.block_size=[{block}, {block}]",
        )
        for file, expected in whole.items():
            assert found[file].shape == expected.shape
            assert np.abs(found[file] - expected).max() <= 1e-5, (name, file)
    blended = probabilities(run, images, tmp_path / "blended")
    assert np.abs(blended["wide_seg.tif"] - whole["wide_seg.tif"]).max() > 1e-3


def test_a_window_dependent_network_keeps_blended_windows(tmp_path: Path, images: Path) -> None:
    run = segmentation_run(tmp_path, *TINY, "model.backbone.norm=instance")
    blended = probabilities(run, images, tmp_path / "blended")
    auto = probabilities(run, images, tmp_path / "auto", 'predict.halo="auto"')
    for name, array in blended.items():
        assert np.array_equal(auto[name], array)
