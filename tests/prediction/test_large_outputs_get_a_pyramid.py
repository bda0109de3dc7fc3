"""OME-Zarr outputs larger than 1024 voxels in Y or X get downsampled levels by default (viewers
open them at a coarse level first); small ones stay one level; `predict.pyramid_levels` chooses."""

from __future__ import annotations

from pathlib import Path

import zarr
from predict_helpers import nuclei_image

from bioim2im import predict_files


def levels(run: Path, image: Path, out: Path, *overrides: str) -> list[tuple[int, ...]]:
    predict_files(run, str(image), out, overrides=overrides, progress=False)
    group = zarr.open_group(out / f"{image.name.split('.')[0]}.ome.zarr" / "prob", mode="r")
    paths = [d["path"] for d in group.attrs["multiscales"][0]["datasets"]]
    return [group[p].shape for p in paths]


def test_a_large_output_gets_a_pyramid_a_small_one_none(run_2d: Path, tmp_path: Path) -> None:
    wide = nuclei_image(tmp_path / "wide.tif", (24, 2100), seed=1)
    assert levels(run_2d, wide, tmp_path / "wide") == [(1, 24, 2100), (1, 12, 1050), (1, 6, 525)]
    small = nuclei_image(tmp_path / "small.tif", (48, 64), seed=2)
    assert levels(run_2d, small, tmp_path / "small") == [(1, 48, 64)]
    chosen = levels(run_2d, small, tmp_path / "chosen", "predict.pyramid_levels=1")
    assert chosen == [(1, 48, 64), (1, 24, 32)]
