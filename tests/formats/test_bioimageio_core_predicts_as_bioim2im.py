"""bioimageio.core's own prediction of a package bioim2im exported equals `bioim2im predict`:
the network is window-independent (batch normalisation), the package declares its receptive
field as the halo, and bioim2im tiles as core's blockwise prediction does (`predict.halo`).
Probabilities agree within 1e-4 for every block size core is asked for, ONNX and TorchScript."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from export_helpers import nuclei_file, tiny_overrides

from batch_norm_runs import batch_norm_run
from bioim2im import api
from bioim2im.io import open_image

PRESETS = Path(__file__).resolve().parents[2] / "presets"
WINDOW_INDEPENDENT = [
    "model.backbone.norm=batch",
    'model.heads.seg.postprocess=[{name = "sigmoid"}]',
]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("core")
    run = batch_norm_run(root, *tiny_overrides("segmentation-2d"), *WINDOW_INDEPENDENT)
    image = nuclei_file(root / "test.tif", (64, 64), seed=1)
    return api.export(
        run, "bioimageio", output=root / "package", folder=True, test_image=image
    ).path


def core_prediction(package: Path, image: np.ndarray, weights: str, n: int) -> np.ndarray:
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_description

    from bioim2im.formats.bioimageio.calls import bioimageio_calls

    with bioimageio_calls():
        descr = load_description(package / "rdf.yaml", perform_io_checks=False)
        (tensor,) = descr.inputs
        sample = create_sample_for_model(descr, inputs={tensor.id: image[None, None]})
        with create_prediction_pipeline(descr, weights_format=weights) as pipeline:
            found = pipeline.predict_sample_with_blocking(sample, ns=n)
    (member,) = found.members.values()
    return np.asarray(member.data.values).squeeze()


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
