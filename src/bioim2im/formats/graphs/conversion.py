"""A network converted to TorchScript or ONNX, and the check that the conversion computes what
the network computes.

Both conversions trace the network on an example input: what they record is the sequence of
tensor operations, with the spatial sizes left free (ONNX: dynamic axes for the batch and every
spatial axis), so the converted graph takes any size the network takes (multiples of its
divisor). :func:`disagreement` runs the network and its conversion on random inputs of several
sizes and reports where they differ by more than :data:`TOLERANCE`.

ONNX goes through torch's TorchScript-based exporter (``dynamo=False``): it takes dynamic axes
as they are, converts a small U-Net in under a second where the ``torch.export``-based exporter
takes about ten, and needs the ``onnx`` package only to add metadata. Both exporters and
``torch.jit.trace`` are deprecated in favour of ``torch.export``; TorchScript stays because
bioimage.io consumers (deepImageJ, bioimageio.core) read it, and the warnings are kept out of
the user's way.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

INPUT_NAME = "input"
ONNX_OPSET = 17
METADATA_FILE = "bioim2im.json"
"""TorchScript extra file / ONNX metadata key holding what bioim2im knows of the network."""
GRAPH_FORMAT = "bioim2im-graph"
"""The ``format`` of that metadata: ``{"format", "bioim2im", "heads", "preset"}``."""
TOLERANCE = 1e-4
"""Largest difference allowed between the network and its conversion (float32), absolute and
relative to the network's output."""

Outputs = Callable[[torch.Tensor], Any]
"""A network run: its outputs as a tensor, a sequence or a dict (in order)."""


@contextmanager
def _quiet() -> Iterator[None]:
    # Tracing warns about deprecations and Python values it records as constants; neither is
    # the user's business (the agreement check catches a recorded size).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def as_tuple(outputs: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(outputs, torch.Tensor):
        return (outputs,)
    if isinstance(outputs, Mapping):
        return tuple(outputs.values())
    return tuple(outputs)


def to_torchscript(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``module`` (in eval mode) traced on ``example``."""
    module.eval()
    with _quiet(), torch.no_grad():
        return torch.jit.trace(module, example, check_trace=False, strict=False)


def torchscript_bytes(
    scripted: torch.jit.ScriptModule, metadata: Mapping[str, Any] | None
) -> bytes:
    """The TorchScript file, with ``metadata`` as its :data:`METADATA_FILE` extra file."""
    buffer = io.BytesIO()
    extra = {METADATA_FILE: json.dumps(metadata)} if metadata is not None else {}
    with _quiet():
        torch.jit.save(scripted, buffer, _extra_files=extra)
    return buffer.getvalue()


def load_torchscript(
    source: Path | bytes,
    device: str | torch.device = "cpu",
    *,
    trusted: bool = False,
    name: str | None = None,
) -> tuple[torch.jit.ScriptModule, dict[str, Any] | None]:
    """A TorchScript file and its bioim2im metadata (None when it has none).

    Unless ``trusted`` (a graph bioim2im has just made, or the user's ``--trust-model``), the
    archive is checked before it is loaded and the graph before it is returned: tensor
    operations only (:mod:`bioim2im.formats.graphs.allowlist`); ``name`` is the file in messages.
    """
    from bioim2im.formats.graphs.allowlist import check_archive, check_module

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    label = name or (str(source) if not isinstance(source, bytes) else "the TorchScript graph")
    if not trusted:
        check_archive(data, label)
    extra = {METADATA_FILE: ""}
    with _quiet():
        module = torch.jit.load(io.BytesIO(data), map_location=device, _extra_files=extra)
    if not trusted:
        check_module(module, label)
    module.eval()
    text = extra[METADATA_FILE]
    return module, (json.loads(text) if text else None)


def to_onnx(
    module: nn.Module,
    example: torch.Tensor,
    output_names: Sequence[str],
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """``module`` as an ONNX graph whose batch and spatial axes are dynamic."""
    module.eval()
    with torch.no_grad():
        outputs = as_tuple(module(example))
    if len(outputs) != len(output_names):
        raise ValueError(f"{len(outputs)} outputs but {len(output_names)} names")
    dynamic = {INPUT_NAME: {0: "batch", **{a: f"size{a - 2}" for a in range(2, example.ndim)}}}
    for name, output in zip(output_names, outputs, strict=True):
        dynamic[name] = {0: "batch", **{a: f"{name}_size{a - 2}" for a in range(2, output.ndim)}}
    buffer = io.BytesIO()
    with _quiet():
        torch.onnx.export(
            module,
            (example,),
            buffer,  # type: ignore[arg-type]
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    data = buffer.getvalue()
    return data if metadata is None else _with_metadata(data, metadata)


def _with_metadata(data: bytes, metadata: Mapping[str, Any]) -> bytes:
    import onnx

    graph = onnx.load_from_string(data)
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_FILE, json.dumps(metadata)
    return graph.SerializeToString()


def disagreement(
    reference: nn.Module,
    converted: Outputs,
    sizes: Sequence[Sequence[int]],
    in_channels: int,
    *,
    seed: int = 0,
) -> str | None:
    """Where ``converted`` differs from ``reference`` by more than :data:`TOLERANCE` on random
    inputs of each of ``sizes`` (batches of two), or None when they agree everywhere."""
    generator = torch.Generator().manual_seed(seed)
    reference.eval()
    for size in sizes:
        batch = torch.randn((2, in_channels, *size), generator=generator)
        with torch.no_grad():
            expected = [t.float().numpy() for t in as_tuple(reference(batch))]
            actual = [np.asarray(t, dtype=np.float32) for t in as_tuple(converted(batch))]
        if len(actual) != len(expected):
            return f"{len(actual)} outputs instead of {len(expected)} for inputs of {tuple(size)}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            if got.shape != want.shape:
                return (
                    f"output {index} has shape {got.shape} instead of {want.shape} for inputs "
                    f"of {tuple(size)}"
                )
            excess = np.abs(got - want) - TOLERANCE * (1 + np.abs(want))
            if (excess > 0).any():
                worst = float(np.abs(got - want).max())
                return (
                    f"output {index} differs by up to {worst:.2e} (more than {TOLERANCE:g}) for "
                    f"inputs of {tuple(size)}"
                )
    return None
