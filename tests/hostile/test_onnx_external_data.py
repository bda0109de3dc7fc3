"""An ONNX graph that keeps its weights in another file ("external data") reads them from its
own folder, whatever the current directory (issue 28): never from the working directory, and
never from outside its folder."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import assert_ok, assert_user_error, invoke


def conv_with_external_weights(folder: Path, weights: str = "weights.bin") -> tuple[Path, object]:
    """A 3 x 3 convolution as ``folder/conv.onnx`` whose weights are in ``folder/weights``."""
    import onnx
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    convolution = torch.nn.Conv2d(1, 1, 3, padding=1).eval()
    axes = {0: "b", 2: "y", 3: "x"}
    plain = folder / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            convolution, (torch.zeros(1, 1, 16, 16),), str(plain), input_names=["image"],
            output_names=["out"], dynamic_axes={"image": axes, "out": axes}, dynamo=False,
        )  # fmt: skip
    graph = onnx.load(str(plain))
    plain.unlink()
    onnx.save_model(
        graph,
        str(folder / "conv.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=weights,
        size_threshold=0,
    )
    return folder / "conv.onnx", convolution


def relocate(model: Path, location: str) -> None:
    """Point every external tensor of ``model`` at ``location``."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False)
    for tensor in graph.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(graph, str(model))


def test_external_data_is_read_from_the_models_folder(tmp_path: Path, one_image: Path) -> None:
    import torch

    from bioim2im.io import open_image

    model, convolution = conv_with_external_weights(tmp_path / "model")
    # Another file of the same name, and size, where the command runs.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    size = (tmp_path / "model" / "weights.bin").stat().st_size
    (elsewhere / "weights.bin").write_bytes(np.full(size // 4, 7.0, np.float32).tobytes())
    out = tmp_path / "out"
    result = invoke(
        "predict", model, "-i", one_image, "-o", out, "--format", "tiff",
        "--set", "predict.roi_size=[64, 64]", cwd=elsewhere,
    )  # fmt: skip
    assert_ok(result)
    image = open_image(one_image).read().astype(np.float32)
    with torch.no_grad():
        expected = convolution(torch.from_numpy(image)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(open_image(out / "img_000_out.tif").read(), expected, atol=1e-4)


@pytest.mark.parametrize("where", ["parent", "absolute", "link"])
def test_external_data_outside_the_models_folder_is_refused(
    where: str, tmp_path: Path, one_image: Path
) -> None:
    model, _ = conv_with_external_weights(tmp_path / "model")
    secret = tmp_path / "secret.bin"
    shutil.move(tmp_path / "model" / "weights.bin", secret)
    if where == "link":
        (tmp_path / "model" / "weights.bin").symlink_to(secret)
        location = "weights.bin"
    else:
        location = "../secret.bin" if where == "parent" else str(secret)
        relocate(model, location)
    result = invoke(
        "predict", model, "-i", one_image, "-o", tmp_path / "out",
        "--set", "predict.roi_size=[32, 32]",
    )  # fmt: skip
    assert_user_error(result, str(model), location, "outside")


def test_a_package_whose_onnx_weights_keep_external_data(
    exported_package: Path, tmp_path: Path, one_image: Path
) -> None:
    """In a package folder the data beside the graph is read; a zip cannot hold it for ONNX
    Runtime, and says so."""
    from hostile_models import copy_package, only_weights, zip_folder

    model, _ = conv_with_external_weights(tmp_path / "conv")
    package = copy_package(exported_package, tmp_path / "package")
    shutil.copy(tmp_path / "conv" / "weights.bin", package / "weights.bin")
    only_weights(package, "onnx", model.read_bytes())
    assert_ok(invoke("predict", package, "-i", one_image, "-o", tmp_path / "out"))
    archive = zip_folder(package, tmp_path / "package.zip")
    result = invoke("predict", archive, "-i", one_image, "-o", tmp_path / "out2")
    assert_user_error(result, "package.zip", "weights.bin", "zip package")
