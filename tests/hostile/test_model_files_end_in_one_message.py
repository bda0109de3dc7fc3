"""Damaged or odd model files end in one message and exit 2, never a traceback (issue 28):
a package whose ``architecture.kwargs`` or ``config.bioim2im`` have the wrong types, whose
weights are garbage or missing; foreign graphs whose output is a scalar or text, that take one
window at a time (they run), or that are given a window of zeros."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hostile_helpers import assert_ok, assert_user_error, invoke
from hostile_models import copy_package, edit_rdf, only_weights, read_rdf, scripted_bytes
from torch import nn

ROI = ("--set", "predict.roi_size=[32, 32]")


def predict(model: Path, image: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return invoke("predict", model, "-i", image, "-o", out, *extra)


def state_dict_only(package: Path) -> Path:
    return only_weights(package, "pytorch_state_dict")


@pytest.mark.parametrize("form", ["file", "import_from"])
@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"patch_size": 5}, "patch_size"),
        ({"patch_size": ["a", "b"]}, "patch_size"),
        ({"model": "unet"}, "model"),
        ({"model": {"features": "many"}}, "features"),
        ({"model": {"backbone": {"name": "os.system"}}}, "os.system"),
    ],
)
def test_architecture_kwargs_of_the_wrong_type(
    form: str,
    kwargs: dict[str, Any],
    says: str,
    exported_package: Path,
    tmp_path: Path,
    one_image: Path,
) -> None:
    """The network's [model] section, in the package's config.bioim2im.network (the weights'
    architecture a file bioim2im attached, which it never runs) or in the architecture's
    kwargs (PackagedNetwork, named for a network with components of plugins)."""
    package = state_dict_only(copy_package(exported_package, tmp_path / "package"))

    def change(rdf: dict[str, Any]) -> None:
        entry = rdf["weights"]["pytorch_state_dict"]
        arguments = rdf["config"]["bioim2im"]["network"]
        if form == "import_from":
            entry.pop("dependencies", None)
            entry["architecture"] = {
                "callable": "PackagedNetwork",
                "import_from": "bioim2im.model.packaged",
                "kwargs": arguments,
            }
        for key, value in kwargs.items():
            if isinstance(value, dict):
                model = arguments["model"]
                for inner, setting in value.items():
                    if isinstance(setting, dict):
                        model[inner] = {**model[inner], **setting}
                    else:
                        model[inner] = setting
            else:
                arguments[key] = value

    edit_rdf(package, change)
    where = "weights.pt" if form == "import_from" else "config.bioim2im.network"
    assert_user_error(predict(package, one_image, tmp_path / "out"), where, says)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("text", "config.bioim2im"),
        ({"preset": 5}, "config.bioim2im.preset"),
        ({"preset": "preset.toml", "outputs": [1, 2]}, "config.bioim2im.outputs"),
        ({"preset": "preset.toml", "outputs": {"seg": 5}}, "config.bioim2im.outputs.seg"),
        (
            {"preset": "preset.toml", "outputs": {"seg": {"expressed_steps": "two"}}},
            "config.bioim2im.outputs.seg",
        ),
        ({"preset": "preset.toml", "outputs": {"seg": {"head": ["seg"]}}}, "outputs.seg"),
    ],
)
def test_config_bioim2im_of_the_wrong_type(
    value: Any, says: str, exported_package: Path, tmp_path: Path, one_image: Path
) -> None:
    package = copy_package(exported_package, tmp_path / "package")
    edit_rdf(package, lambda rdf: rdf["config"].__setitem__("bioim2im", value))
    assert_user_error(predict(package, one_image, tmp_path / "out"), says)


@pytest.mark.parametrize("format", ["onnx", "torchscript", "pytorch_state_dict"])
@pytest.mark.parametrize("damage", ["garbage", "missing", "empty"])
def test_garbage_or_missing_weights(
    format: str, damage: str, exported_package: Path, tmp_path: Path, one_image: Path
) -> None:
    package = copy_package(exported_package, tmp_path / "package")
    if damage == "missing":
        only_weights(package, format)
        (package / read_rdf(package)["weights"][format]["source"]).unlink()
    else:
        only_weights(package, format, b"" if damage == "empty" else b"\x00garbage" * 100)
    result = predict(package, one_image, tmp_path / "out")
    assert_user_error(result, "package")
    assert not (tmp_path / "out").exists()


class Scalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum()


class Text(nn.Module):
    def forward(self, x: torch.Tensor) -> str:
        return "a string"


class Texts(nn.Module):
    def forward(self, x: torch.Tensor) -> list[str]:
        return ["a", "b"]


class Same(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1


class Flat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten()


@pytest.mark.parametrize("module", [Scalar(), Text(), Texts(), Flat()], ids=type)
def test_a_foreign_torchscript_with_an_output_that_is_not_an_image(
    module: nn.Module, tmp_path: Path, one_image: Path
) -> None:
    model = tmp_path / "odd.pt"
    model.write_bytes(scripted_bytes(module))
    result = predict(model, one_image, tmp_path / "out", *ROI)
    assert_user_error(result, "odd.pt")


def onnx_file(path: Path, module: nn.Module, dynamic_batch: bool = True) -> Path:
    axes = {2: "y", 3: "x"} | ({0: "b"} if dynamic_batch else {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (torch.zeros(1, 1, 32, 32),), str(path), input_names=["image"],
            output_names=["out"], dynamic_axes={"image": axes}, dynamo=False,
        )  # fmt: skip
    return path


def test_a_foreign_onnx_graph_with_a_scalar_output(tmp_path: Path, one_image: Path) -> None:
    model = onnx_file(tmp_path / "scalar.onnx", Scalar())
    assert_user_error(predict(model, one_image, tmp_path / "out", *ROI), "scalar.onnx", "shape")


def test_a_foreign_graph_that_takes_one_window_at_a_time_runs(
    tmp_path: Path, one_image: Path
) -> None:
    """Fixed at a batch of one: prediction sends it one window at a time."""
    torch.manual_seed(0)
    model = onnx_file(tmp_path / "one.onnx", nn.Conv2d(1, 1, 3, padding=1), dynamic_batch=False)
    assert_ok(predict(model, one_image, tmp_path / "out", *ROI, "--set", "predict.overlap=0.5"))


@pytest.mark.parametrize("roi", ["[0, 0]", "[-32, 32]", "[32]", "[true, 32]", '"big"'])
def test_a_foreign_graph_given_a_window_of_no_size(
    roi: str, tmp_path: Path, one_image: Path
) -> None:
    model = tmp_path / "same.pt"
    model.write_bytes(scripted_bytes(Same()))
    result = predict(model, one_image, tmp_path / "out", "--set", f"predict.roi_size={roi}")
    assert_user_error(result, "predict.roi_size")


def test_a_package_fixed_at_a_batch_of_one_runs(
    exported_package: Path, tmp_path: Path, one_image: Path
) -> None:
    """A package (from another tool: no preset attached) whose input's batch axis is 1."""
    torch.manual_seed(0)
    graph = onnx_file(tmp_path / "one.onnx", nn.Conv2d(1, 1, 3, padding=1), dynamic_batch=False)
    package = copy_package(exported_package, tmp_path / "package")
    only_weights(package, "onnx", graph.read_bytes())

    def change(rdf: dict[str, Any]) -> None:
        del rdf["config"]["bioim2im"], rdf["attachments"]
        rdf["inputs"][0]["axes"][0] = {"type": "batch", "size": 1}

    edit_rdf(package, change)
    (package / "preset.toml").unlink()
    result = predict(package, one_image, tmp_path / "out", *ROI, "--set", "predict.overlap=0.5")
    assert_ok(result)


# ---- a text file given as a checkpoint ---------------------------------------------------
@pytest.mark.parametrize("where", ["predict", "init_from"])
def test_a_text_file_given_as_a_checkpoint(
    where: str, trained_run: Path, tiny_preset, nuclei_data: Path, tmp_path: Path
) -> None:
    """torch's loader fails with IndexError ("pop from empty list") on a short text file."""
    notes = tmp_path / "notes.txt"
    notes.write_text("a plain file\n", encoding="utf-8")
    if where == "predict":
        result = invoke("predict", notes, "-i", nuclei_data / "IM", "-o", tmp_path / "out")
    else:
        result = invoke(
            "train",
            tiny_preset(),
            "--run-dir",
            tmp_path / "run",
            "--set",
            f'train.init_from="{notes}"',
        )
    assert_user_error(result, "notes.txt")
