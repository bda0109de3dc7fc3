"""The reader: bioim2im's predictions (OME-Zarr and TIFF), any OME-Zarr image with its labels,
and run directories open as layers of the right type, scale and translation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from napari_bioim2im._reader import get_reader
from napari_helpers import errors


@pytest.fixture(scope="module")
def scaled_image(image_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test image as an OME-TIFF with a voxel size of 0.5 x 0.25 micrometres."""
    import tifffile

    from bioim2im.io import write_image

    folder = tmp_path_factory.mktemp("scaled")
    return write_image(
        folder / "cells.ome.tif", tifffile.imread(image_file), axes="YX", voxel_size=(0.5, 0.25)
    )


def open_layers(viewer, path: Path) -> list:
    return viewer.open(path, plugin="napari-bioim2im")


def test_a_prediction_opens_with_its_scale_and_label_layers(
    make_napari_viewer, instance_run: Path, scaled_image: Path, tmp_path: Path
) -> None:
    from bioim2im import api

    api.predict_files(instance_run, scaled_image, tmp_path, progress=False)
    viewer = make_napari_viewer()
    layers = open_layers(viewer, tmp_path / "cells.ome.zarr")

    assert [(layer.name, type(layer).__name__) for layer in layers] == [("cells_seg", "Labels")]
    seg = layers[0]
    np.testing.assert_allclose(seg.scale, (0.5, 0.25))
    np.testing.assert_allclose(seg.translate, (0, 0))
    expected = api.predict(instance_run, np.asarray(api_open(scaled_image)))["seg"][0]
    np.testing.assert_array_equal(np.asarray(seg.data), expected)


def api_open(path: Path) -> np.ndarray:
    from bioim2im.io import open_image

    return open_image(path).read()


def test_a_tiff_prediction_is_labels_with_its_voxel_size(
    make_napari_viewer, instance_run: Path, scaled_image: Path, tmp_path: Path
) -> None:
    from bioim2im import api

    api.predict_files(instance_run, scaled_image, tmp_path, format="tiff", progress=False)
    viewer = make_napari_viewer()
    (seg,) = open_layers(viewer, tmp_path / "cells_seg.tif")
    assert (seg.name, type(seg).__name__) == ("cells_seg", "Labels")
    np.testing.assert_allclose(seg.scale, (0.5, 0.25))
    (image,) = open_layers(viewer, scaled_image)
    assert type(image).__name__ == "Image" and image.name == "cells"
    np.testing.assert_allclose(image.scale, (0.5, 0.25))


def write_ngff(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An OME-Zarr 0.4 image (C, Y, X) with two levels, a translation, and a label image in
    ``labels/``, written with zarr alone."""
    import zarr

    rng = np.random.default_rng(0)
    image = rng.random((2, 32, 48)).astype(np.float32)
    labels = np.zeros((32, 48), np.uint16)
    labels[4:12, 6:20] = 1
    labels[20:30, 30:44] = 2
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", data=image, chunks=(1, 32, 48))
    root.create_array("1", data=image[:, ::2, ::2], chunks=(1, 16, 24))
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.5]}],
                },
                {
                    "path": "1",
                    "coordinateTransformations": [{"type": "scale", "scale": [1, 1.0, 1.0]}],
                },
            ],
            "coordinateTransformations": [
                {"type": "translation", "translation": [0, 100.0, -20.0]}
            ],
        }
    ]
    group = root.create_group("labels")
    group.attrs["labels"] = ["cells"]
    cells = group.create_group("cells")
    cells.create_array("0", data=labels, chunks=(32, 48))
    cells.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes[1:],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [0.5, 0.5]},
                        {"type": "translation", "translation": [100.0, -20.0]},
                    ],
                }
            ],
        }
    ]
    cells.attrs["image-label"] = {"version": "0.4"}
    return image, labels


def test_an_ome_zarr_opens_with_translation_pyramid_channels_and_labels(
    make_napari_viewer, tmp_path: Path
) -> None:
    image, labels = write_ngff(tmp_path / "plate.ome.zarr")
    viewer = make_napari_viewer()
    layers = open_layers(viewer, tmp_path / "plate.ome.zarr")

    kinds = [(layer.name, type(layer).__name__) for layer in layers]
    assert kinds == [("plate 0", "Image"), ("plate 1", "Image"), ("plate cells", "Labels")]
    for layer in layers:
        np.testing.assert_allclose(layer.scale, (0.5, 0.5))
        np.testing.assert_allclose(layer.translate, (100.0, -20.0))
    assert layers[0].multiscale and len(layers[0].data) == 2
    np.testing.assert_array_equal(np.asarray(layers[1].data[0]), image[1])
    np.testing.assert_array_equal(np.asarray(layers[2].data), labels)


def test_a_run_opens_its_validation_images_truth_and_latest_snapshot(
    make_napari_viewer, instance_run: Path
) -> None:
    from bioim2im import api

    viewer = make_napari_viewer()
    layers = open_layers(viewer, instance_run)
    (val,) = api.validation_images(instance_run)
    kinds = [(layer.name, type(layer).__name__) for layer in layers]
    assert kinds == [
        (f"{val.name} (validation)", "Image"),
        (f"{val.name} seg truth", "Labels"),
        ("instance step 10: input | target | prediction", "Image"),
    ]
    assert layers[2].rgb
    np.testing.assert_array_equal(np.asarray(layers[0].data), api_open(val.image))
    np.testing.assert_array_equal(np.asarray(layers[1].data), api_open(val.targets["seg"]))


def test_other_files_are_left_to_other_readers(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "folder").mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "folder")) is None
    assert get_reader(str(tmp_path / "missing.tif")) is None


def test_a_damaged_file_is_one_notification(
    make_napari_viewer, tmp_path: Path, notifications
) -> None:
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 16)
    reader = get_reader(str(broken))
    assert reader is not None
    assert reader(str(broken)) == []
    shown = errors(notifications)
    assert len(shown) == 1 and "broken.tif" in shown[0], shown
