"""Every shipped preset's network (made tiny) exports to each format: a bioimage.io package that
bioimageio.core's model test passes, and TorchScript and ONNX files whose outputs equal the
network's on random inputs of two sizes. With ``BIOIM2IM_EXPORTED_PACKAGES=FOLDER`` the
packages are kept there, for ``nox -s bioimageio_newest`` (CI runs both)."""

from __future__ import annotations

import io
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from export_helpers import PRESETS, core_prediction, nuclei_file, untrained_run

from bioim2im import api

NAMES = sorted(p.stem for p in PRESETS.glob("*.toml"))


def network_and_sizes(run: Path):  # type: ignore[no-untyped-def]
    """The run's network (heads in order) and two input sizes it takes."""
    from bioim2im.formats.export.source import open_source
    from bioim2im.model.packaged import HeadsInOrder

    source = open_source(run)
    return HeadsInOrder(source.model.network, source.heads).eval(), source.test_sizes(), source


def assert_same_outputs(expected, actual) -> None:  # type: ignore[no-untyped-def]
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual, strict=True):
        want = want.detach().numpy()
        assert got.shape == want.shape
        assert np.all(np.abs(got - want) <= 1e-4 * (1 + np.abs(want)))


def assert_core_predicts_as_bioim2im(package: Path, image: Path, out: Path) -> int:
    """bioimageio.core's blockwise prediction of ``image`` by the package equals `bioim2im
    predict`'s, for every output whose head's postprocessing the package expresses whole:
    probabilities within 1e-4, masks in all but a few voxels at the threshold. Returns how
    many outputs it compared."""
    import tomllib

    from bioim2im.io import open_image
    from bioim2im.prediction.job import predict_files

    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        preset = tomllib.loads(archive.read("preset.toml").decode())
    predict_files(package, str(image), out, format="tiff", progress=False)
    pixels = open_image(image).read().astype(np.float32)
    found = core_prediction(package, pixels, "onnx")
    compared = 0
    for tensor, own in rdf["config"]["bioim2im"]["outputs"].items():
        steps = preset["model"]["heads"][own["head"]].get("postprocess", [])
        if own["expressed_steps"] < len(steps):
            continue  # bioim2im runs further steps (labels): the package's README says so
        expected = open_image(out / f"{image.stem}_{own['head']}.tif").read().squeeze()
        assert found[tensor].shape == expected.shape, tensor
        difference = np.abs(found[tensor].astype(np.float64) - expected.astype(np.float64))
        if np.issubdtype(expected.dtype, np.floating):
            assert difference.max() <= 1e-4, tensor
        else:
            assert np.mean(difference > 0) <= 1e-3, tensor
        compared += 1
    return compared


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_exports_to_each_format(name: str, tmp_path: Path) -> None:
    run = untrained_run(name, tmp_path)
    network, sizes, source = network_and_sizes(run)
    shape = (24, 40, 40) if source.spatial_dims == 3 else (48, 48)
    image = nuclei_file(tmp_path / "image.tif", shape)

    package = api.export(run, "bioimageio", output=tmp_path / "model.zip", test_image=image)
    assert package.path.is_file() and "bioimageio.core" in package.checks[0]
    keep = os.environ.get("BIOIM2IM_EXPORTED_PACKAGES")
    if keep:  # for `nox -s bioimageio_newest`, which tests them under the newest spec
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package.path, Path(keep) / f"{name}.zip")
    with zipfile.ZipFile(package.path) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    with zipfile.ZipFile(package.path) as archive:
        weights = torch.load(io.BytesIO(archive.read("weights.pt")), weights_only=True)
    # The generator's weights only, for a GAN too.
    assert set(weights) == {f"network.{k}" for k in network.network.state_dict()}
    assert [o["id"] for o in rdf["outputs"]] == source.heads
    axes = {o["id"]: o["axes"][2:] for o in rdf["outputs"]}
    if name == "superres-3d":  # an upsampling head: voxels twice as fine as the input's
        assert [a["scale"] for a in axes["highres"]] == [0.5, 0.5, 0.5]
    if name == "multitask-3d":  # a projection head has no z
        assert [a["id"] for a in axes["mip"]] == ["y", "x"]
        assert [a["id"] for a in axes["seg"]] == ["z", "y", "x"]

    compared = assert_core_predicts_as_bioim2im(package.path, image, tmp_path / "predicted")
    # Only instance heads end in steps bioimage.io cannot express (watershed, clustering).
    assert compared or name.startswith(("instance", "embedseg")), name

    scripted = api.export(run, "torchscript", output=tmp_path / "model.pt").path
    graph = api.export(run, "onnx", output=tmp_path / "model.onnx").path
    # What bioim2im exports runs where a graph from elsewhere must hold tensor operations only.
    from bioim2im.formats.graphs.conversion import load_torchscript

    load_torchscript(scripted)
    with zipfile.ZipFile(package.path) as archive:
        load_torchscript(archive.read("weights_torchscript.pt"))
    with warnings.catch_warnings():  # TorchScript is deprecated, and what deepImageJ reads
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(scripted))
    import onnxruntime

    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    for size in sizes:
        batch = torch.randn((2, source.model.in_channels, *size), generator=generator)
        with torch.no_grad():
            expected = network(batch)
            expected = (expected,) if isinstance(expected, torch.Tensor) else expected
            from_script = loaded(batch)
            from_script = (from_script,) if isinstance(from_script, torch.Tensor) else from_script
        assert_same_outputs(expected, [t.numpy() for t in from_script])
        assert_same_outputs(expected, session.run(None, {"input": batch.numpy()}))
