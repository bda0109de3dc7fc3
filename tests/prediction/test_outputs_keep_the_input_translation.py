"""An OME-Zarr input's scale and translation go to every output (and to each pyramid level), so
that the prediction overlays its input wherever both are opened."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from predict_helpers import nuclei_image

from bioim2im import predict_files
from bioim2im.io import open_image

SCALE, TRANSLATION = (0.5, 0.5), (10.0, 20.0)


def ome_zarr_input(path: Path, image: np.ndarray) -> Path:
    """A 2D NGFF 0.4 image with a scale and a translation (micrometers), written with zarr."""
    root = zarr.open_group(path, mode="w", zarr_format=2)
    root.create_array("0", data=image, chunks=image.shape)
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": list(SCALE)},
                        {"type": "translation", "translation": list(TRANSLATION)},
                    ],
                }
            ],
        }
    ]
    return path


def transformations(group: zarr.Group) -> list[dict[str, list[float]]]:
    entry = group.attrs["multiscales"][0]
    return [
        {t["type"]: t[t["type"]] for t in d["coordinateTransformations"]} for d in entry["datasets"]
    ]


@pytest.fixture(scope="module")
def output(run_2d: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("translation")
    image = open_image(nuclei_image(folder / "cells.tif", (64, 64), seed=3)).read()
    source = ome_zarr_input(folder / "cells.ome.zarr", image)
    assert open_image(source).origin == TRANSLATION
    out = folder / "out"
    predict_files(run_2d, str(source), out, overrides=["predict.pyramid_levels=1"], progress=False)
    return out / "cells.ome.zarr"


def test_every_output_and_level_keeps_the_input_translation(output: Path) -> None:
    root = zarr.open_group(output, mode="r")
    # Averaged levels: the first voxel's centre moves by half a level-0 voxel per halving.
    probabilities = [
        {"scale": [1.0, 0.5, 0.5], "translation": [0.0, 10.0, 20.0]},
        {"scale": [1.0, 1.0, 1.0], "translation": [0.0, 10.25, 20.25]},
    ]
    assert transformations(root["prob"]) == probabilities
    assert transformations(root) == probabilities  # the top shows the probabilities
    # Label levels take every other voxel from the first: the same translation.
    assert transformations(root["labels/seg"]) == [
        {"scale": [1.0, 0.5, 0.5], "translation": [0.0, 10.0, 20.0]},
        {"scale": [1.0, 1.0, 1.0], "translation": [0.0, 10.0, 20.0]},
    ]
    assert open_image(output / "prob").origin == TRANSLATION
    assert open_image(output / "labels" / "seg", level=1).origin == TRANSLATION


def test_ome_zarr_py_reads_the_translation(output: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    image = next(iter(Reader(parse_url(str(output)))()))
    level0 = image.metadata["coordinateTransformations"][0]
    assert {"type": "translation", "translation": [0.0, 10.0, 20.0]} in level0
