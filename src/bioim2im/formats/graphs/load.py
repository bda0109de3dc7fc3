"""TorchScript and ONNX files read for prediction.

- **A file exported by bioim2im** carries the run's preset and heads
  (:data:`~bioim2im.formats.graphs.conversion.METADATA_FILE`): it predicts exactly as the run
  does.
- **Any other file** takes the window from ``--set predict.roi_size=[...]`` (sizes the network
  takes) and images as they are (``--set data.normalize=...`` to normalise); its outputs are
  probed on one window and named after the graph's outputs.

A TorchScript graph runs only when it holds tensor operations alone, unless the user trusts it
(:mod:`bioim2im.formats.graphs.allowlist`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.errors import UserError, first_line
from bioim2im.formats.settings import (
    bare_preset,
    build_component,
    model_settings,
    preset_from_text,
    table,
)
from bioim2im.formats.trained_model import PackagedModel, TrainedModel, chain_output, head_outputs

if TYPE_CHECKING:
    import torch


def load_graph(
    path: Path,
    kind: str,
    overrides: Sequence[str],
    device: torch.device,
    trust_model: bool,
    folder: Path | None,
) -> TrainedModel:
    """The model in the ``kind`` (``onnx`` or ``torchscript``) file ``path``; ONNX external data
    is read from ``folder`` only (None: refused)."""
    from bioim2im.formats.graphs.conversion import GRAPH_FORMAT, METADATA_FILE
    from bioim2im.formats.graphs.runtimes import OnnxRuntimeNetwork

    data = path.read_bytes()
    runtime: Any
    if kind == "onnx":
        runtime = OnnxRuntimeNetwork(data, None, device, name=str(path), folder=folder)
        try:
            metadata = json.loads(runtime.metadata.get(METADATA_FILE) or "null")
        except (json.JSONDecodeError, RecursionError):
            metadata = None
        names = list(runtime.heads)
    else:
        runtime, metadata = read_torchscript(data, device, trust_model, str(path))
        names = []
    digest = hashlib.sha256(data)
    if isinstance(metadata, dict) and metadata.get("format") == GRAPH_FORMAT:
        return _bioim2im_graph(path, kind, runtime, metadata, overrides, device, digest)
    return _foreign_graph(path, kind, runtime, names, overrides, device, digest)


def read_torchscript(
    data: bytes, device: torch.device, trust_model: bool, name: str
) -> tuple[Any, Any]:
    """A TorchScript graph and its metadata, checked unless trusted; one message when it is
    not TorchScript."""
    from bioim2im.formats.graphs.conversion import load_torchscript

    try:
        return load_torchscript(data, device, trusted=trust_model, name=name)
    except UserError:
        raise
    except RecursionError:
        raise UserError(f"{name}: its bioim2im metadata nests too deeply") from None
    except Exception as exc:  # torch fails in many ways on what is not TorchScript
        raise UserError(f"{name} is not a readable TorchScript file: {first_line(exc)}") from None


def _bioim2im_graph(
    path: Path,
    kind: str,
    runtime: Any,
    metadata: Mapping[str, Any],
    overrides: Sequence[str],
    device: torch.device,
    digest: Any,
) -> TrainedModel:
    from bioim2im.config.loading import to_toml
    from bioim2im.formats.graphs.runtimes import NamedOutputs
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    text, heads = metadata.get("preset", ""), metadata.get("heads", [])
    if not isinstance(text, str) or not isinstance(heads, list):
        raise UserError(
            f"{path}: its bioim2im metadata is damaged (a preset as text and a list of heads)"
        )
    preset = preset_from_text(text, overrides, registry, f"{path}'s preset")
    heads = [str(h) for h in heads]
    outputs = head_outputs(preset, registry)
    unknown = [h for h in heads if h not in outputs]
    if not heads or unknown:
        raise UserError(f"{path}: its metadata names heads {heads} its preset does not have")
    network = runtime.renamed(heads) if kind == "onnx" else NamedOutputs(runtime, heads)
    digest.update(to_toml(preset).encode())
    return TrainedModel(
        checkpoint=path,
        preset=preset,
        registry=registry,
        network=network,
        heads={h: outputs[h] for h in heads},
        device=device,
        amp_dtype=None,
        fingerprint=digest.hexdigest(),
    )


def _foreign_graph(
    path: Path,
    kind: str,
    runtime: Any,
    names: list[str],
    overrides: Sequence[str],
    device: torch.device,
    digest: Any,
) -> TrainedModel:
    from bioim2im.formats.graphs.runtimes import NamedOutputs
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    settings = model_settings(
        overrides, allowed=("predict", "data.axes", "data.normalize", "model")
    )
    predict = table(settings.get("predict", {}), "predict")
    model = table(settings.get("model", {}), "model")
    roi = predict.get("roi_size")
    if not roi:
        raise UserError(
            f"{path} does not say which image sizes it takes: give the window, e.g. --set "
            "predict.roi_size=[256,256] (a size the network takes; 3 numbers for 3D)"
        )
    if (
        not isinstance(roi, list)
        or len(roi) not in (2, 3)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in roi)
    ):
        raise UserError(
            f"predict.roi_size must be 2 or 3 sizes of at least 1 (a window {path} takes), "
            f"got {roi!r}"
        )
    in_channels = model.get("in_channels", 1)
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise UserError(f"model.in_channels must be a positive integer, got {in_channels!r}")
    probe = _probe(path, runtime, (1, in_channels, *roi), device)
    if "batch_size" not in predict and not _takes_batches(runtime, (in_channels, *roi), device):
        settings["predict"] = predict = {**predict, "batch_size": 1}
    if not names or len(names) != len(probe):
        names = ["output"] if len(probe) == 1 else [f"output{i}" for i in range(len(probe))]
    heads = {}
    specs = table(model.get("heads", {}), "model.heads")
    for name, output in zip(names, probe, strict=True):
        geometry = _geometry(path, name, tuple(output.shape[2:]), roi)
        spec = table(specs.get(name, {}), f"model.heads.{name}")
        chain = spec.get("postprocess", [])
        if not isinstance(chain, list):
            raise UserError(
                f"model.heads.{name}.postprocess must be a list of steps, got {chain!r}"
            )
        steps = [(s.get("name"), build_component("postprocessor", s, registry)) for s in chain]
        heads[name] = chain_output(
            name, int(output.shape[1]), geometry, steps, spec.get("output_dtype"), registry
        )
    network = runtime.renamed(names) if kind == "onnx" else NamedOutputs(runtime, names)
    normalize = table(settings.get("data", {}), "data").get("normalize")
    normalization = build_component("transform", normalize, registry) if normalize else None
    preset = bare_preset(settings, roi, in_channels)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return PackagedModel(
        checkpoint=path,
        preset=preset,
        registry=registry,
        network=network,
        heads=heads,
        device=device,
        amp_dtype=None,
        fingerprint=digest.hexdigest(),
        normalization=normalization,
    )


def _probe(
    path: Path, runtime: Any, shape: tuple[int, ...], device: torch.device
) -> tuple[torch.Tensor, ...]:
    """The graph's outputs for a window of zeros, each a tensor shaped (batch, channels,
    *space) of numbers: one message naming what else it gives."""
    import torch

    try:
        with torch.inference_mode():
            found = runtime(torch.zeros(shape, device=device))
    except UserError as exc:
        raise UserError(f"{path}: {exc.message}", exc.problems) from None
    except Exception as exc:  # the graph refuses the window: say which
        raise UserError(
            f"{path} does not run on a window of {shape[1]} channel(s) x {list(shape[2:])}: "
            f"{first_line(exc)} (set predict.roi_size to a size it takes, model.in_channels to its "
            "channels)"
        ) from None
    if isinstance(found, torch.Tensor):
        outputs: tuple[Any, ...] = (found,)
    elif isinstance(found, Mapping):
        outputs = tuple(found.values())
    elif isinstance(found, (tuple, list)):
        outputs = tuple(found)
    else:
        raise UserError(f"{path}: the graph returns a {type(found).__name__}, not tensors")
    if not outputs:
        raise UserError(f"{path}: the graph returns no outputs")
    for index, output in enumerate(outputs):
        if not isinstance(output, torch.Tensor):
            raise UserError(
                f"{path}: output {index} of the graph is a {type(output).__name__}, not a tensor"
            )
        if output.is_complex() or output.ndim < 3 or output.shape[1] < 1:
            raise UserError(
                f"{path}: output {index} of the graph is a {output.dtype} tensor of shape "
                f"{tuple(output.shape)}; bioim2im writes real-valued outputs shaped (batch, "
                "channels, *space)"
            )
        if output.shape[0] != shape[0]:
            raise UserError(
                f"{path}: output {index} of the graph has a batch of {output.shape[0]} for "
                f"{shape[0]} window(s)"
            )
    return outputs


def _takes_batches(runtime: Any, shape: tuple[int, ...], device: torch.device) -> bool:
    """Whether the graph takes two windows at once (some are made for one)."""
    import torch

    try:
        with torch.inference_mode():
            found = runtime(torch.zeros((2, *shape), device=device))
    except Exception:  # a graph made for batches of one refuses two in its own way
        return False
    if isinstance(found, Mapping):
        found = tuple(found.values())
    found = (found,) if isinstance(found, torch.Tensor) else tuple(found)
    return all(isinstance(t, torch.Tensor) and t.ndim >= 1 and t.shape[0] == 2 for t in found)


def _geometry(path: Path, name: str, shape: tuple[int, ...], roi: Sequence[int]) -> Any:
    from bioim2im.prediction.blockwise import HeadGeometry

    dropped = len(roi) - len(shape)
    if dropped < 0:
        raise UserError(f"{path}: output {name!r} has more spatial axes than its input")
    scale = []
    for size, window in zip(shape, roi[dropped:], strict=True):
        if size % window or size < window:
            raise UserError(
                f"{path}: output {name!r} has spatial shape {shape} for a window of {tuple(roi)}; "
                "only outputs of the window's size, or a whole multiple of it, are supported"
            )
        scale.append(size // window)
    return HeadGeometry(scale=(1,) * dropped + tuple(scale), dropped_axes=tuple(range(dropped)))
