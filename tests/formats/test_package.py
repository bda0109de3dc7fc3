"""A trained run's bioimage.io package: what it holds, bioimageio.core's own test on it, and
predicting from it (and from its TorchScript and ONNX files) as from the run."""

from __future__ import annotations

import json
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from export_helpers import nuclei_file

from bioim2im import api
from bioim2im.io import open_image

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The "seg" head numbering its objects: a step bioimage.io cannot express.
INSTANCE = (
    "model.heads.seg.task=instance",
    'model.heads.seg.postprocess=[{name = "sigmoid"}, {name = "threshold"}, '
    '{name = "connected_components"}]',
)


@pytest.fixture(scope="module")
def package(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "model.zip"
    return api.export(trained_run, "bioimageio", output=out).path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    nuclei_file(folder / "small.tif", (64, 64), seed=3)
    nuclei_file(folder / "wide.tif", (96, 136), seed=4)
    return folder


def predictions(
    model: Path | str, images: Path, out: Path, *overrides: str
) -> dict[str, np.ndarray]:
    from bioim2im.prediction.job import predict_files

    predict_files(model, str(images), out, format="tiff", overrides=overrides, progress=False)
    return {p.name: open_image(p).read() for p in sorted(out.glob("*.tif"))}


def test_the_package_holds_a_valid_model_that_bioimageio_core_accepts(
    package: Path, trained_run: Path
) -> None:
    from bioimageio.core import test_model

    from bioim2im.formats.bioimageio.calls import bioimageio_calls

    with bioimageio_calls():
        summary = test_model(package)
    assert summary.status == "passed", summary.format()
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        readme = archive.read("README.md").decode()
        preset = archive.read("preset.toml").decode()
        names = set(archive.namelist())
    assert rdf["format_version"].startswith("0.5.")
    weights = rdf["weights"]
    assert weights["torchscript"]["parent"] == weights["onnx"]["parent"] == "pytorch_state_dict"
    # The architecture as a file of the package that needs torch and MONAI only.
    architecture = weights["pytorch_state_dict"]["architecture"]
    assert architecture["source"] == "bioim2im_network.py" and architecture["callable"] == "Network"
    assert "import_from" not in architecture and len(architecture["sha256"]) == 64
    assert {"bioim2im_network.py", "environment.yaml"} <= names
    (tensor,) = rdf["inputs"]
    assert [a["type"] for a in tensor["axes"]] == ["batch", "channel", "space", "space"]
    # Instance normalisation: one input size, the prediction window (the training patch).
    assert [a["size"] for a in tensor["axes"][2:]] == [32, 32]
    assert tensor["preprocessing"][1]["id"] == "scale_range"
    seg, prob = rdf["outputs"]
    assert [p["id"] for p in seg["postprocessing"]] == ["sigmoid", "binarize", "ensure_dtype"]
    assert [p["id"] for p in prob["postprocessing"]] == ["sigmoid", "ensure_dtype"]
    # Half the prediction windows' overlap: 0.25 x 32 / 2.
    assert {a.get("halo") for a in seg["axes"][2:]} == {4}
    assert {"cover.png", "test_input.npy", "test_output_seg.npy", "README.md"} <= names
    # The run's resolved preset, less the local path of its data.
    expected = tomllib.loads((trained_run / "preset.toml").read_text())
    del expected["data"]["path"]
    assert tomllib.loads(preset) == expected
    dice = json.loads((trained_run / "result.json").read_text())["metrics"]["val/seg/dice"]
    validation = readme.split("## Validation", 1)[1].split("##", 1)[0]
    assert f"| val/seg/dice | {dice:.4g} |" in validation
    assert "skipped" in readme.lower() or "Skipped" in readme


def test_predicting_from_the_package_and_the_graphs_equals_predicting_from_the_run(
    trained_run: Path, package: Path, images: Path, tmp_path: Path
) -> None:
    blended = predictions(trained_run, images, tmp_path / "run")
    assert set(blended) == {"small_seg.tif", "small_prob.tif", "wide_seg.tif", "wide_prob.tif"}
    # The package tiles as bioimageio.core does, with its halo; the run does so when asked.
    tiled = predictions(trained_run, images, tmp_path / "run-halo", "predict.halo=[4, 4]")
    onnx = api.export(trained_run, "onnx", output=tmp_path / "model.onnx").path
    script = api.export(trained_run, "torchscript", output=tmp_path / "model.pt").path
    for model, backend, expected in (
        (package, "onnxruntime", tiled),
        (package, "torch", tiled),
        (onnx, "auto", blended),
        (script, "auto", blended),
    ):
        found = predictions(
            model, images, tmp_path / f"{model.name}-{backend}", f"predict.backend={backend}"
        )
        assert set(found) == set(expected)
        for name, array in expected.items():
            assert found[name].shape == array.shape
            assert np.abs(found[name].astype(float) - array.astype(float)).max() <= 1e-4, name


def test_steps_bioimageio_cannot_express_run_from_the_attached_preset(
    trained_run: Path, images: Path, tmp_path: Path
) -> None:
    path = api.export(trained_run, "bioimageio", output=tmp_path / "m.zip", overrides=INSTANCE).path
    with zipfile.ZipFile(path) as archive:
        readme = archive.read("README.md").decode()
    assert "connected_components" in readme.split("cannot express", 1)[1]
    expected = predictions(trained_run, images, tmp_path / "run", *INSTANCE, "predict.halo=[4, 4]")
    found = predictions(path, images, tmp_path / "package")
    for name in ("small_seg.tif", "wide_seg.tif"):
        assert found[name].max() > 1  # objects numbered, not a mask
        np.testing.assert_array_equal(found[name], expected[name])


def test_a_package_from_another_tool_runs_with_its_own_processing(
    package: Path, trained_run: Path, images: Path, tmp_path: Path
) -> None:
    """Without bioim2im's attachment, only the description says how to normalise, which
    windows to take and how to postprocess; the outputs still match the run's."""
    foreign = tmp_path / "foreign"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(foreign)
    rdf = yaml.safe_load((foreign / "rdf.yaml").read_text())
    del rdf["config"]["bioim2im"], rdf["attachments"]
    (foreign / "preset.toml").unlink()
    (foreign / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    window = ("predict.roi_size=[32, 32]", "predict.overlap=0.25")
    expected = predictions(trained_run, images, tmp_path / "run")
    for model in (foreign, foreign / "rdf.yaml"):  # the folder, or its description
        found = predictions(model, images, tmp_path / f"out-{model.name}", *window)
        for name, array in expected.items():
            assert np.abs(found[name].astype(float) - array.astype(float)).max() <= 1e-4, name


def test_a_bare_onnx_file_runs_with_the_window_given(tmp_path: Path, images: Path) -> None:
    import torch

    convolution = torch.nn.Conv2d(1, 2, 1).eval()
    path = tmp_path / "conv.onnx"
    axes = {0: "b", 2: "y", 3: "x"}
    with warnings.catch_warnings():  # the exporter bioim2im also uses is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            convolution, (torch.zeros(1, 1, 16, 16),), str(path), input_names=["image"],
            output_names=["features"], dynamic_axes={"image": axes, "features": axes}, dynamo=False,
        )  # fmt: skip
    found = predictions(path, images, tmp_path / "out", "predict.roi_size=[32, 32]")
    image = open_image(images / "small.tif").read().astype(np.float32)
    with torch.no_grad():
        expected = convolution(torch.from_numpy(image)[None, None])[0].numpy()
    np.testing.assert_allclose(found["small_features.tif"], expected, atol=1e-4)


def test_onnxruntime_backend_equals_torch(trained_run: Path, images: Path, tmp_path: Path) -> None:
    expected = predictions(trained_run, images, tmp_path / "torch", "predict.backend=torch")
    found = predictions(trained_run, images, tmp_path / "ort", "predict.backend=onnxruntime")
    for name, array in expected.items():
        assert np.abs(found[name].astype(float) - array.astype(float)).max() <= 1e-4, name
