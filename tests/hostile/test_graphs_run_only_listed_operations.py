"""A TorchScript graph from elsewhere runs only when every operation it holds is on a reviewed
allowlist of tensor operations (bioim2im.formats.graphs.allowlist): an aten operation that is
not listed is refused by name even when it is harmless, so a new torch operation that touches
files is refused until someone reviews it; the networks people bring (MONAI's, scripted or
traced) pass; and no listed operation takes a file."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hostile_helpers import assert_ok, assert_user_error, invoke
from hostile_models import scripted_bytes
from torch import nn

from bioim2im.errors import UserError
from bioim2im.formats.graphs.allowlist import ATEN, allowed
from bioim2im.formats.graphs.conversion import load_torchscript

ROI = ("--set", "predict.roi_size=[32, 32]")


class Bessel(nn.Module):
    """A rare but harmless tensor operation (aten::special_bessel_j0), not on the list."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.special.bessel_j0(x) * 0


class Saving(nn.Module):
    """Writes its input to ``target`` with ``torch.save`` (aten::save)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.target)
        return x


def test_an_unlisted_tensor_operation_is_refused_by_name(tmp_path: Path, one_image: Path) -> None:
    model = tmp_path / "bessel.pt"
    model.write_bytes(scripted_bytes(Bessel()))
    result = invoke("predict", model, "-i", one_image, "-o", tmp_path / "out", *ROI)
    assert_user_error(result, "bessel.pt", "aten::special_bessel_j0", "--trust-model")
    assert not (tmp_path / "out").exists()
    trusted = invoke(
        "predict", model, "-i", one_image, "-o", tmp_path / "trusted", *ROI, "--trust-model"
    )
    assert_ok(trusted)


def test_a_graph_that_saves_a_file_is_refused(tmp_path: Path, one_image: Path) -> None:
    written = tmp_path / "stolen.pt"
    model = tmp_path / "saving.pt"
    model.write_bytes(scripted_bytes(Saving(str(written))))
    result = invoke("predict", model, "-i", one_image, "-o", tmp_path / "out", *ROI)
    assert_user_error(result, "saving.pt", "aten::save", "--trust-model")
    assert not written.exists()


NOT_TENSOR_OPERATIONS = (
    "aten::from_file",
    "aten::save",
    "aten::_print",
    "aten::manual_seed",
    "aten::seed",
    "aten::set_grad_enabled",
    "aten::wait",
    "aten::record_stream",
    "aten::_cufft_clear_plan_cache",
    "aten::_cufft_set_plan_cache_max_size",
    "aten::backward",
)


def test_operations_on_files_global_state_or_threads_are_not_listed() -> None:
    tests = {s.name for s in torch._C._jit_get_all_schemas() if s.name.startswith("aten::_test_")}
    assert tests
    assert [kind for kind in (*NOT_TENSOR_OPERATIONS, *tests) if allowed(kind)] == []


# ---- networks people bring ------------------------------------------------------------------
def _monai() -> dict[str, Callable[[], nn.Module]]:
    from monai.networks import nets

    return {
        "UNet": lambda: nets.UNet(2, 1, 2, (4, 8, 16), (2, 2), num_res_units=0),
        "UNet-residual": lambda: nets.UNet(2, 1, 2, (4, 8, 16), (2, 2), num_res_units=2),
        "AttentionUnet": lambda: nets.AttentionUnet(2, 1, 2, (4, 8, 16), (2, 2)),
        "BasicUNet": lambda: nets.BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4)),
        "DynUNet": lambda: nets.DynUNet(2, 1, 2, [3, 3, 3], [1, 2, 2], [2, 2]),
        "SegResNet": lambda: nets.SegResNet(2, 8, 1, 2),
        "UNETR": lambda: nets.UNETR(
            1, 2, (32, 32), feature_size=4, hidden_size=48, mlp_dim=96, num_heads=2, spatial_dims=2
        ),
        "SwinUNETR": lambda: nets.SwinUNETR(
            in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1), spatial_dims=2
        ),
    }


MONAI = [
    "UNet",
    "UNet-residual",
    "AttentionUnet",
    "BasicUNet",
    "DynUNet",
    "SegResNet",
    "UNETR",
    "SwinUNETR",
]
# SwinUNETR's forward does not script; UNETR scripted carries einops' TorchScript class
# (TransformRecipe), refused as a class other than its modules (traced, both pass).
SCRIPTABLE = [n for n in MONAI if n not in ("SwinUNETR", "UNETR")]


def _saved(scripted: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(scripted, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("name", SCRIPTABLE)
def test_a_scripted_monai_network_passes(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(_monai()[name]().eval())
    module, _ = load_torchscript(_saved(scripted), name=f"{name}.pt")
    with torch.no_grad():
        assert module(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("name", MONAI)
def test_a_traced_monai_network_passes(name: str) -> None:
    network = _monai()[name]().eval()
    size = 64 if name == "SwinUNETR" else 32
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(network, torch.zeros(1, 1, size, size), check_trace=False)
    module, _ = load_torchscript(_saved(traced), name=f"{name}.pt")
    with torch.no_grad():
        assert module(torch.zeros(1, 1, size, size)).shape == (1, 2, size, size)


# ---- the list itself ------------------------------------------------------------------------
FILE_WORDS = ("file", "path", "filename", "f", "fname", "filepath", "dir", "directory")
CONTRACTION_ORDER = ("aten::einsum", "path", "Optional[List[int]]")
"""einsum's ``path`` is the order in which it contracts its operands (numbers), not a file."""


def _names_a_file(argument: str) -> bool:
    words = argument.lower().split("_")
    return argument.lower() in FILE_WORDS or any(w in ("file", "path", "dir") for w in words)


def test_no_listed_operation_takes_a_file() -> None:
    """Every overload of every listed name, from torch's own schemas: none has an argument named
    like a file or a path (einsum's contraction order aside, a list of numbers)."""
    schemas = [s for s in torch._C._jit_get_all_schemas() if s.name in ATEN]
    suspicious = {
        (s.name, a.name, str(a.type)) for s in schemas for a in s.arguments if _names_a_file(a.name)
    }
    assert suspicious <= {CONTRACTION_ORDER}, sorted(suspicious - {CONTRACTION_ORDER})
    # The check itself finds what it must.
    every = torch._C._jit_get_all_schemas()
    takes_files = {s.name for s in every if any(_names_a_file(a.name) for a in s.arguments)}
    assert {"aten::from_file", "aten::save"} <= takes_files


def test_every_listed_operation_is_one_torch_knows() -> None:
    """A misspelt name would allow nothing, or something else one day."""
    known = {s.name for s in torch._C._jit_get_all_schemas()}
    assert all(name.startswith("aten::") for name in ATEN)
    assert sorted(ATEN - known) == []


def test_the_refusal_names_the_operation_and_the_file() -> None:
    with pytest.raises(UserError, match=r"bessel\.pt.*aten::special_bessel_j0.*--trust-model"):
        load_torchscript(scripted_bytes(Bessel()), name="bessel.pt")
