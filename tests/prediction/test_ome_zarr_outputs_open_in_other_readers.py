"""`bioim2im predict`'s OME-Zarr output opens at its top level (`<stem>.ome.zarr`) in the
readers users open it with, and shows the prediction: the float output as the image, the
integer outputs (masks, instance labels) as NGFF labels over it. Checked with the readers
themselves: ome-zarr-py, the napari-ome-zarr reader function (no display), bioio-ome-zarr, and
validated with ome-zarr-models; NGFF 0.4 on zarr v2 and 0.5 on zarr v3, with a pyramid."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from predict_helpers import INSTANCE, nuclei_image, read_zarr

from bioim2im import predict_files


@pytest.fixture(scope="module", params=[2, 3], ids=["ngff-0.4", "ngff-0.5"])
def output(
    request: pytest.FixtureRequest, run_2d: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("readers")
    image = nuclei_image(folder / "cells.tif", (64, 80), seed=7)
    settings = [*INSTANCE, f"predict.zarr_format={request.param}", "predict.pyramid_levels=1"]
    predict_files(run_2d, str(image), folder / "out", overrides=settings, progress=False)
    return folder / "out" / "cells.ome.zarr"


def test_ome_zarr_py_reads_the_image_and_its_labels(output: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Labels, Multiscales, Reader

    nodes = list(Reader(parse_url(str(output)))())
    image, labels, label = nodes
    assert any(isinstance(s, Multiscales) for s in image.specs) and len(image.data) == 2
    np.testing.assert_array_equal(np.asarray(image.data[0]), read_zarr(output / "prob" / "0"))
    assert any(isinstance(s, Labels) for s in labels.specs)
    assert any(isinstance(s, Label) for s in label.specs)
    found = np.asarray(label.data[0])
    np.testing.assert_array_equal(found, read_zarr(output / "labels" / "seg" / "0"))
    assert found.max() > 1  # numbered objects


def test_napari_ome_zarr_shows_the_image_and_the_labels(output: Path) -> None:
    napari_ome_zarr = pytest.importorskip(
        "napari_ome_zarr", reason="the dev extra installs napari-ome-zarr"
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the reader prints what it found
        reader = napari_ome_zarr.napari_get_reader(str(output))
        assert reader is not None
        layers = reader(str(output))
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "labels"]
    (image, _, _), (labels, _, _) = layers
    assert len(image) == len(labels) == 2  # both pyramid levels
    np.testing.assert_array_equal(np.asarray(image[0]), read_zarr(output / "prob" / "0"))
    assert np.asarray(labels[0]).max() > 1


def test_bioio_opens_the_prediction(output: Path) -> None:
    pytest.importorskip("bioio_ome_zarr", reason="the dev extra installs bioio-ome-zarr")
    import bioio_ome_zarr
    from bioio import BioImage

    found = BioImage(str(output), reader=bioio_ome_zarr.Reader)
    assert found.resolution_levels == (0, 1)
    data = np.asarray(found.get_image_data("CYX"))
    np.testing.assert_array_equal(data, read_zarr(output / "prob" / "0"))


def test_ome_zarr_models_validates_the_image_and_its_labels(output: Path) -> None:
    pytest.importorskip("ome_zarr_models", reason="the dev extra installs ome-zarr-models")
    import zarr
    from ome_zarr_models import open_ome_zarr

    root = open_ome_zarr(zarr.open_group(output, mode="r"))
    assert type(root).__name__ == "Image"
    assert type(open_ome_zarr(zarr.open_group(output / "labels", mode="r"))).__name__ == "Labels"
    label = open_ome_zarr(zarr.open_group(output / "labels" / "seg", mode="r"))
    assert type(label).__name__ == "ImageLabel"
