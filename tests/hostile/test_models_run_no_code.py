"""A model from someone else runs tensor operations, not code (issue 28, 1): a TorchScript graph
is inspected before it is loaded and run, and refused (exit 2, one message naming the file and
the operation) unless every operation is a tensor operation, or the user says --trust-model.
Where a package offers ONNX weights too, ONNX Runtime runs them."""

from __future__ import annotations

import fractions
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_helpers import assert_ok, assert_user_error, invoke
from hostile_models import (
    Looping,
    Printing,
    UsesAClass,
    copy_package,
    edit_rdf,
    file_toucher,
    hook_toucher,
    load_toucher,
    only_weights,
    scripted_bytes,
    sha256,
)

ROI = ("--set", "predict.roi_size=[32, 32]")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "precious.txt"
    path.write_text("precious contents\n")
    return path


def predict(model: Path, image: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return invoke("predict", model, "-i", image, "-o", out, *extra)


def test_a_torchscript_file_that_writes_files_is_refused(
    tmp_path: Path, victim: Path, one_image: Path
) -> None:
    created = tmp_path / "created.pth"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(file_toucher(victim, created))
    result = predict(evil, one_image, tmp_path / "out", *ROI)
    assert_user_error(result, "evil.pt", "aten::from_file", "--trust-model")
    assert victim.read_text() == "precious contents\n"
    assert not created.exists()
    assert not (tmp_path / "out").exists()


def test_a_torchscript_file_that_runs_code_while_loading_is_refused(
    tmp_path: Path, victim: Path, one_image: Path
) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(load_toucher(victim))
    result = predict(evil, one_image, tmp_path / "out", *ROI)
    assert_user_error(result, "evil.pt", "__setstate__")
    assert victim.read_text() == "precious contents\n"


def test_a_torchscript_hook_that_writes_files_is_refused(
    tmp_path: Path, victim: Path, one_image: Path
) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(hook_toucher(victim))
    result = predict(evil, one_image, tmp_path / "out", *ROI)
    assert_user_error(result, "evil.pt", "aten::from_file")
    assert victim.read_text() == "precious contents\n"


def test_a_torchscript_class_other_than_the_modules_is_refused(
    tmp_path: Path, one_image: Path
) -> None:
    model = tmp_path / "classy.pt"
    model.write_bytes(scripted_bytes(UsesAClass()))
    result = predict(model, one_image, tmp_path / "out", *ROI)
    assert_user_error(result, "classy.pt", "Scaler")


def test_a_packages_torchscript_weights_that_write_files_are_refused(
    exported_package: Path, tmp_path: Path, victim: Path, one_image: Path
) -> None:
    created = tmp_path / "created.pth"
    package = copy_package(exported_package, tmp_path / "package")
    only_weights(package, "torchscript", file_toucher(victim, created))
    result = predict(package, one_image, tmp_path / "out")
    assert_user_error(result, "weights_torchscript.pt", "aten::from_file")
    assert victim.read_text() == "precious contents\n"
    assert not created.exists()


def test_a_package_offering_onnx_weights_runs_them_with_onnx_runtime(
    exported_package: Path, tmp_path: Path, victim: Path, one_image: Path
) -> None:
    """The package's TorchScript would write files; its ONNX weights run instead."""
    created = tmp_path / "created.pth"
    package = copy_package(exported_package, tmp_path / "package")
    evil = file_toucher(victim, created)
    (package / "weights_torchscript.pt").write_bytes(evil)

    def change(rdf: dict) -> None:  # type: ignore[type-arg]
        rdf["weights"]["torchscript"]["sha256"] = sha256(evil)
        del rdf["weights"]["pytorch_state_dict"]
        for entry in rdf["weights"].values():
            entry.pop("parent", None)

    edit_rdf(package, change)
    assert_ok(predict(package, one_image, tmp_path / "out"))
    assert victim.read_text() == "precious contents\n"
    assert not created.exists()


def test_trust_model_runs_a_graph_outside_the_allowlist(tmp_path: Path, one_image: Path) -> None:
    model = tmp_path / "printing.pt"
    model.write_bytes(scripted_bytes(Printing()))
    assert_user_error(predict(model, one_image, tmp_path / "a", *ROI), "printing.pt", "prim::Print")
    assert_ok(predict(model, one_image, tmp_path / "b", *ROI, "--trust-model"))
    assert (tmp_path / "b" / "img_000.ome.zarr").is_dir()


def test_the_api_refuses_and_trusts_alike(tmp_path: Path) -> None:
    import bioim2im
    from bioim2im.errors import UserError

    model = tmp_path / "printing.pt"
    model.write_bytes(scripted_bytes(Printing()))
    image = np.ones((32, 32), np.float32)
    with pytest.raises(UserError, match="prim::Print"):
        bioim2im.predict(model, image, overrides=["predict.roi_size=[32, 32]"], device="cpu")
    outputs = bioim2im.predict(
        model, image, overrides=["predict.roi_size=[32, 32]"], device="cpu", trust_model=True
    )
    np.testing.assert_allclose(outputs["output"][0], image)


def test_a_scripted_network_of_tensor_operations_runs(tmp_path: Path, one_image: Path) -> None:
    model = tmp_path / "looping.pt"
    model.write_bytes(scripted_bytes(Looping()))
    assert_ok(predict(model, one_image, tmp_path / "out", *ROI))


def test_bioim2ims_own_torchscript_passes_the_check(
    trained_run: Path, exported_package: Path, tmp_path: Path, one_image: Path
) -> None:
    model = tmp_path / "model.pt"
    assert_ok(invoke("export", trained_run, "--format", "torchscript", "-o", model))
    assert_ok(predict(model, one_image, tmp_path / "file"))
    package = only_weights(copy_package(exported_package, tmp_path / "package"), "torchscript")
    assert_ok(predict(package, one_image, tmp_path / "package-out"))


def test_onnx_weights_come_first_wherever_onnx_runtime_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a GPU too, when this onnxruntime has CUDA (no GPU needed to check the choice)."""
    import onnxruntime
    import torch

    from bioim2im.formats.bioimageio.load import weights_order

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert weights_order("auto", cpu) == ["onnx", "pytorch_state_dict", "torchscript"]
    assert weights_order("torch", cpu) == ["pytorch_state_dict", "torchscript"]
    assert weights_order("onnxruntime", cuda) == ["onnx"]
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: providers)
    assert weights_order("auto", cuda)[0] == "onnx"
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: providers[1:])
    assert weights_order("auto", cuda) == ["pytorch_state_dict", "torchscript", "onnx"]


@pytest.mark.parametrize("declared", ["its own sha256", "bioim2im's sha256"])
def test_a_packages_architecture_file_is_never_run(
    declared: str, exported_package: Path, tmp_path: Path, victim: Path, one_image: Path
) -> None:
    """The state dict's architecture file is for other tools: bioim2im builds the network from
    its own components (config.bioim2im.network) when the file is the one it attaches, known
    by its sha256, and runs no other."""
    package = only_weights(
        copy_package(exported_package, tmp_path / "package"), "pytorch_state_dict"
    )
    created = tmp_path / "created.txt"
    code = (
        f"open({str(created)!r}, 'w').write('ran')\nopen({str(victim)!r}, 'w').write('gone')\n"
    ).encode()
    (package / "bioim2im_network.py").write_bytes(code)

    def change(rdf: dict) -> None:  # type: ignore[type-arg]
        if declared == "its own sha256":
            rdf["weights"]["pytorch_state_dict"]["architecture"]["sha256"] = sha256(code)

    edit_rdf(package, change)
    result = predict(package, one_image, tmp_path / "out", *ROI)
    if declared == "its own sha256":
        assert_user_error(result, "no weights bioim2im can run")
    else:  # the file does not match what it declares: nothing reads it
        assert_ok(result)
    assert victim.read_text() == "precious contents\n"
    assert not created.exists()


# ---- checkpoints that safe loading refuses -----------------------------------------------
class _CallsGetcwd:
    """Unpickles by calling os.getcwd: harmless, and outside torch's safe list."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getcwd, ())


@pytest.mark.parametrize("payload", ["object", "call"])
def test_the_weights_only_refusal_does_not_advise_unsafe_loading(
    trained_run: Path, nuclei_data: Path, tmp_path: Path, payload: str
) -> None:
    state = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    state["note"] = fractions.Fraction(1, 3) if payload == "object" else _CallsGetcwd()
    torch.save(state, tmp_path / "odd.pt")
    result = invoke("predict", tmp_path / "odd.pt", "-i", nuclei_data / "IM", "-o", tmp_path / "o")
    assert_user_error(result, "odd.pt")
    message = result.err.replace(str(tmp_path), "TMP")
    for advice in (
        r"weights_only.{0,40}False",
        "can still be loaded",
        "trust the source",
        "arbitrary code",
        "add_safe_globals",
        "safe_globals",
    ):
        assert not re.search(advice, message, re.S | re.I), result
    assert "\x1b[" not in message, "terminal escape codes in the message"
