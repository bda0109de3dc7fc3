"""bioimageio.core's own prediction of a package bioim2im exported equals `bioim2im predict`'s.

A window-independent network (batch normalisation): the package declares its receptive field as
the halo, and bioim2im tiles as core's blockwise prediction does (`predict.halo`), for every
block size core is asked for. A network whose output depends on the window (instance
normalisation, the presets' default): the package takes one input size, bioim2im's window, and
bioim2im tiles the package with core's blocks of it. Probabilities agree within 1e-4 for
each weights format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from export_helpers import core_prediction as core_predictions
from export_helpers import nuclei_file, tiny_overrides

from bioim2im import api
from bioim2im.io import open_image
from segmentation_runs import segmentation_run

PRESETS = Path(__file__).resolve().parents[2] / "presets"
WINDOW_INDEPENDENT = [
    "model.backbone.norm=batch",
    'model.heads.seg.postprocess=[{name = "sigmoid"}]',
]


def export_package(run: Path, root: Path) -> Path:
    image = nuclei_file(root / "test.tif", (64, 64), seed=1)
    return api.export(
        run, "bioimageio", output=root / "package", folder=True, test_image=image
    ).path


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("core")
    run = segmentation_run(root, *tiny_overrides("segmentation-2d"), *WINDOW_INDEPENDENT)
    return export_package(run, root)


@pytest.fixture(scope="module")
def window_dependent_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("core-instance-norm")
    probabilities = 'model.heads.seg.postprocess=[{name = "sigmoid"}]'
    run = segmentation_run(root, *tiny_overrides("segmentation-2d"), probabilities)
    return export_package(run, root)


def core_prediction(package: Path, image: np.ndarray, weights: str, n: int) -> np.ndarray:
    (found,) = core_predictions(package, image, weights, n).values()
    return found


def test_the_package_declares_the_receptive_field_as_its_halo(package: Path) -> None:
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    (output,) = rdf["outputs"]
    # One stride of 2 and two 3x3 convolutions on either side: 4 voxels, on the divisor.
    assert [a.get("halo") for a in output["axes"][2:]] == [4, 4]
    assert [a["size"] for a in rdf["inputs"][0]["axes"][2:]] == [{"min": 10, "step": 2}] * 2
    assert rdf["config"]["bioim2im"]["halo"] == [4, 4]


def test_bioimageio_core_predicts_the_package_as_bioim2im_does(
    package: Path, tmp_path: Path
) -> None:
    from bioim2im.prediction.job import predict_files

    path = nuclei_file(tmp_path / "images" / "wide.tif", (96, 136), seed=4)
    image = open_image(path).read().astype(np.float32)
    predict_files(package, str(path.parent), tmp_path / "out", format="tiff", progress=False)
    expected = open_image(tmp_path / "out" / "wide_seg.tif").read().squeeze()
    assert expected.shape == (96, 136) and 0.0 < expected.min() < expected.max() < 1.0
    for weights in ("onnx", "torchscript"):
        for n in (1, 6, 20):
            found = core_prediction(package, image, weights, n)
            assert found.shape == expected.shape
            assert np.abs(found - expected).max() <= 1e-4, (weights, n)


def bioim2im_prediction(package: Path, path: Path, out: Path) -> np.ndarray:
    from bioim2im.prediction.job import predict_files

    predict_files(package, str(path.parent), out, format="tiff", progress=False)
    return open_image(out / f"{path.stem}_seg.tif").read().squeeze()


def test_a_window_dependent_package_takes_bioim2im_window_and_halo(
    window_dependent_package: Path,
) -> None:
    from bioim2im.config import load_preset

    rdf = yaml.safe_load((window_dependent_package / "rdf.yaml").read_text())
    preset = load_preset(window_dependent_package / "preset.toml")
    assert preset.model.backbone.norm == "instance"
    window = list(preset.predict.roi_size or preset.data.patch_size)
    assert [a["size"] for a in rdf["inputs"][0]["axes"][2:]] == window
    (output,) = rdf["outputs"]
    halo = [a.get("halo") for a in output["axes"][2:]]
    assert all(0 < h < w // 2 for h, w in zip(halo, window, strict=True))
    assert rdf["config"]["bioim2im"]["halo"] == halo
    assert (
        "bioimageio.core's blockwise prediction"
        in (window_dependent_package / "README.md").read_text()
    )


@pytest.mark.parametrize("shape", [(96, 136), (45, 71)])
def test_bioimageio_core_predicts_a_window_dependent_package_as_bioim2im_does(
    window_dependent_package: Path, tmp_path: Path, shape: tuple[int, int]
) -> None:
    path = nuclei_file(tmp_path / "images" / "image.tif", shape, seed=6)
    image = open_image(path).read().astype(np.float32)
    expected = bioim2im_prediction(window_dependent_package, path, tmp_path / "out")
    assert expected.shape == shape and 0.0 < expected.min() < expected.max() < 1.0
    for weights in ("onnx", "torchscript", "pytorch_state_dict"):
        found = core_prediction(window_dependent_package, image, weights, 1)
        assert found.shape == expected.shape
        assert np.abs(found - expected).max() <= 1e-4, weights
