"""The network alone as a TorchScript or ONNX file: one graph whose outputs are the heads, in
order, with dynamic batch and spatial sizes, checked against the network before it is written.

The file carries what bioim2im knows of the network (the resolved preset and the heads) as
metadata (a TorchScript extra file, ONNX metadata properties), so ``bioim2im predict
model.onnx`` runs it with the run's normalisation, windows and postprocessing; other tools
ignore it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioim2im._version import __version__
from bioim2im.errors import UserError
from bioim2im.formats.export.source import Source
from bioim2im.formats.graphs.conversion import GRAPH_FORMAT


def graph_metadata(source: Source) -> dict[str, Any]:
    from bioim2im.config.loading import to_toml

    return {
        "format": GRAPH_FORMAT,
        "bioim2im": __version__,
        "heads": source.heads,
        "preset": to_toml(source.shared_preset()),
    }


def export_graph(source: Source, format: str, partial: Path) -> list[str]:
    """Write ``source``'s network as ``format`` at ``partial``; returns the checks passed."""
    import torch

    from bioim2im.formats.graphs.conversion import (
        TOLERANCE,
        disagreement,
        load_torchscript,
        to_onnx,
        to_torchscript,
        torchscript_bytes,
    )
    from bioim2im.formats.graphs.runtimes import NamedOutputs, OnnxRuntimeNetwork
    from bioim2im.model.packaged import HeadsInOrder

    network = HeadsInOrder(source.model.network, source.heads).eval()
    sizes = source.test_sizes()
    example = torch.zeros((1, source.model.in_channels, *sizes[0]))
    metadata = graph_metadata(source)
    if format == "torchscript":
        data = torchscript_bytes(to_torchscript(network, example), metadata)
        runner: Any = NamedOutputs(load_torchscript(data, trusted=True)[0], source.heads)
    else:
        data = to_onnx(network, example, source.heads, metadata)
        runner = OnnxRuntimeNetwork(data, source.heads)
    problem = disagreement(
        network,
        lambda batch: list(runner(batch).values()),
        sizes,
        source.model.in_channels,
    )
    if problem is not None:
        raise UserError(f"the {format} conversion disagrees with the network: {problem}")
    partial.write_bytes(data)
    shown = " and ".join("x".join(map(str, s)) for s in sizes)
    return [f"outputs equal to the network's within {TOLERANCE:g} on random {shown} inputs"]
