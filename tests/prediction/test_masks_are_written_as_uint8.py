"""Masks and class maps are written as uint8 (as the README says), instance labels as uint32,
probabilities as float32; `output_dtype` still chooses."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from predict_helpers import INSTANCE, nuclei_image, read_zarr

from bioim2im import predict_files


def written(run: Path, image: Path, out: Path, *overrides: str) -> dict[str, np.dtype]:
    predict_files(run, str(image), out, overrides=overrides, progress=False)
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    found = {}
    for row in rows:
        array = read_zarr(out / row["output"] / "0")
        assert str(array.dtype) == row["dtype"]
        found[row["head"]] = array.dtype
    return found


def test_a_mask_is_uint8_instance_labels_uint32(run_2d: Path, tmp_path: Path) -> None:
    image = nuclei_image(tmp_path / "cells.tif", (48, 48), seed=2)
    assert written(run_2d, image, tmp_path / "mask") == {"seg": np.uint8, "prob": np.float32}
    assert written(run_2d, image, tmp_path / "objects", *INSTANCE)["seg"] == np.uint32
    chosen = written(run_2d, image, tmp_path / "chosen", "model.heads.seg.output_dtype=uint16")
    assert chosen["seg"] == np.uint16
