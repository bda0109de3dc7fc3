"""The architecture file bioim2im attaches to its bioimage.io packages rebuilds every built-in
backbone and head with torch and MONAI alone: it imports nothing else, bioim2im's weights load
into it strictly and it gives the same outputs. (The CI's `nox -s bioimageio_newest` runs
bioimageio.core's test of exported packages where bioim2im is not installed.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bioim2im.config import validate
from bioim2im.formats.bioimageio.export import standalone_arguments
from bioim2im.model.network import build_model
from bioim2im.model.packaged import HeadsInOrder
from bioim2im.plugin.manager import get_registry

SEMANTIC = {"task": "semantic", "loss": {"name": "dice_ce", "sigmoid": True}}
REGRESSION = {"task": "regression", "loss": {"name": "mse"}}
BACKBONES: list[tuple[str, dict[str, Any], list[int]]] = [
    ("unet", {"channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": "batch"}, [16, 16]),
    ("attention_unet", {"channels": [4, 8]}, [16, 16]),
    ("basic_unet", {"features": [4, 4, 8, 8, 8, 4]}, [32, 32]),
    ("dynunet", {"filters": [4, 8, 8]}, [8, 16, 16]),
    ("segresnet", {"init_filters": 4, "blocks_down": [1, 1], "num_groups": 2}, [16, 16]),
    ("unetr", {"img_size": [16, 16], "hidden_size": 24, "mlp_dim": 32, "num_heads": 2}, [16, 16]),
    ("swin_unetr", {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}, [64, 64]),
    ("n2v2_unet", {"channels": [4, 8, 8], "strides": [2, [1, 2]]}, [16, 16]),
    ("n2v2_unet", {"channels": [4, 8], "pool": "avg", "top_skip": True, "norm": "instance"}, [8, 16, 16]),
]  # fmt: skip
HEADS: list[tuple[dict[str, Any], list[int]]] = [
    ({"name": "conv", "kernel_size": 3, "hidden_channels": 3, **SEMANTIC}, [16, 16]),
    ({"name": "conv", "upsample": 2, "upsample_mode": "pixelshuffle", **REGRESSION}, [16, 16]),
    ({"name": "conv", "upsample": [1, 2], "upsample_mode": "interpolate", **REGRESSION}, [16, 16]),
    ({"name": "conv", "upsample": 2, **REGRESSION}, [8, 16, 16]),
    ({"name": "projection", "mode": "learned", **REGRESSION}, [8, 16, 16]),
    ({"name": "projection", "mode": "max", **REGRESSION}, [8, 16, 16]),
    ({"name": "embedseg", "out_channels": 5, "task": "instance", "loss": {"name": "embedseg"}}, [16, 16]),
    ({"name": "identity", "out_channels": 4, **REGRESSION}, [16, 16]),
]  # fmt: skip


def network_of(backbone: str, params: dict[str, Any], heads: dict[str, Any], patch: list[int]):  # type: ignore[no-untyped-def]
    table = {
        "data": {"patch_size": patch},
        "model": {"features": 4, "backbone": {"name": backbone, **params}, "heads": heads},
    }
    registry = get_registry()
    preset = validate(table, registry, "test preset")
    torch.manual_seed(0)
    network = HeadsInOrder(build_model(preset, registry)).eval()
    for module in network.modules():  # running statistics other than 0 and 1
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return network, standalone_arguments(preset, registry, list(heads))


def combinations() -> list[Any]:
    found = [
        pytest.param(b, p, {"out": {"name": "conv", **SEMANTIC}}, s, id=b) for b, p, s in BACKBONES
    ]
    for index, (head, size) in enumerate(HEADS):
        backbone = ("unet", {"channels": [4, 8], "num_res_units": 0})
        found.append(pytest.param(*backbone, {"out": head}, size, id=f"{head['name']}-{index}"))
    found.append(
        pytest.param("unet", {"channels": [4, 8]}, {"a": {"name": "conv", **SEMANTIC},
                     "b": {"name": "conv", "kernel_size": 3, **REGRESSION}}, [16, 16], id="two-heads")
    )  # fmt: skip
    return found


def test_the_file_imports_torch_and_monai_only() -> None:
    import ast

    from bioim2im.formats.bioimageio.standalone_network_file import text

    imported = set()
    for node in ast.walk(ast.parse(text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported == {"__future__", "collections", "typing", "torch", "monai"}


@pytest.mark.parametrize(("backbone", "params", "heads", "patch"), combinations())
def test_the_attached_architecture_rebuilds_the_network(
    backbone: str, params: dict[str, Any], heads: dict[str, Any], patch: list[int], tmp_path: Path
) -> None:
    import importlib.util

    from bioim2im.formats.bioimageio.standalone_network_file import text

    network, arguments = network_of(backbone, params, heads, patch)
    assert arguments is not None
    (tmp_path / "architecture.py").write_bytes(text())
    # Through a file, as a consumer reads the package's kwargs and weights.
    arguments = json.loads(json.dumps(arguments))
    torch.save(network.state_dict(), tmp_path / "weights.pt")
    spec = importlib.util.spec_from_file_location("architecture", tmp_path / "architecture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rebuilt = module.Network(**arguments)
    rebuilt.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True), strict=True)
    image = torch.randn(2, 1, *patch, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, found = network(image), rebuilt.eval()(image)
    expected = (expected,) if isinstance(expected, torch.Tensor) else expected
    found = (found,) if isinstance(found, torch.Tensor) else found
    assert len(found) == len(expected)
    for want, got in zip(expected, found, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_a_plugin_component_keeps_bioim2ims_own_architecture() -> None:
    registry = get_registry()
    table = {
        "data": {"patch_size": [16, 16]},
        "model": {"backbone": {"name": "unet"}, "heads": {"out": {"name": "conv", **SEMANTIC}}},
    }
    preset = validate(table, registry, "test preset")
    assert standalone_arguments(preset, registry, ["out"]) is not None

    class Elsewhere:
        package = "someone-elses-plugin"

    class Registry:
        def get(self, kind: str, name: str) -> Any:
            return Elsewhere() if kind == "backbone" else registry.get(kind, name)

    assert standalone_arguments(preset, Registry(), ["out"]) is None  # type: ignore[arg-type]
