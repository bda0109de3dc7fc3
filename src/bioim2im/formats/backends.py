"""What runs the network during prediction: torch, or ONNX Runtime (``predict.backend``).

``"onnxruntime"`` converts the network to an ONNX graph when the model is loaded (about a
second for the presets' networks), checks that the graph computes what the network computes
(:func:`bioim2im.formats.graphs.conversion.disagreement`, on random windows of two sizes), and
runs the graph with ONNX Runtime. ``"auto"`` does so on the CPU when onnxruntime is installed and the
network converts and agrees, and uses torch otherwise (on a GPU, or for a network the
conversion cannot record). benchmarks/bench_predict.py measures both on the same volume.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from bioim2im.errors import UserError, first_line

if TYPE_CHECKING:
    from bioim2im.formats.trained_model import TrainedModel

BACKENDS = ("auto", "torch", "onnxruntime")


def chosen_backend(choice: str, device_type: str) -> str:
    """``torch`` or ``onnxruntime`` for ``predict.backend = choice`` on a ``device_type``."""
    from bioim2im.formats.graphs.runtimes import onnxruntime_available

    if choice == "auto":
        return "onnxruntime" if device_type == "cpu" and onnxruntime_available() else "torch"
    return choice


def use_backend(model: TrainedModel) -> TrainedModel:
    """``model`` with its network run by the backend ``predict.backend`` chooses."""
    choice = getattr(model.preset.predict, "backend", "torch")
    if chosen_backend(choice, model.device.type) != "onnxruntime":
        return model
    try:
        network = onnxruntime_network(model)
    except UserError:
        if choice == "auto":
            return model
        raise
    return dataclasses.replace(model, network=network, amp_dtype=None)


def onnxruntime_network(model: TrainedModel) -> Any:
    """The model's network as an ONNX graph run by ONNX Runtime, checked against torch."""
    import torch

    from bioim2im.formats.graphs.conversion import disagreement, to_onnx
    from bioim2im.formats.graphs.runtimes import (
        NamedOutputs,
        OnnxRuntimeNetwork,
        onnxruntime_available,
    )
    from bioim2im.model.packaged import HeadsInOrder

    if not onnxruntime_available():
        raise UserError(
            'predict.backend = "onnxruntime" needs the onnxruntime package: '
            "pip install 'bioim2im[onnx]'"
        )
    heads = list(model.heads)
    ordered = HeadsInOrder(model.network, heads).to("cpu").eval()
    window = model.roi_size
    example = torch.zeros((1, model.in_channels, *window))
    try:
        graph = to_onnx(ordered, example, heads)
    except Exception as exc:  # what the exporter cannot record (a plugin's operation)
        raise UserError(f"the network does not convert to ONNX: {first_line(exc)}") from None
    runtime = OnnxRuntimeNetwork(graph, heads, model.device)
    # Two window sizes: a size recorded as a constant by the conversion shows up here.
    sizes = [window, *_larger(model, window)]
    problem = disagreement(ordered, NamedOutputs(runtime, heads), sizes, model.in_channels)
    if problem is not None:
        raise UserError(f"the ONNX graph of the network disagrees with it: {problem}")
    return runtime


def _larger(model: TrainedModel, window: tuple[int, ...]) -> list[tuple[int, ...]]:
    """A second window size the network takes, when it takes more than one."""
    component = model.registry.get("backbone", model.preset.model.backbone.name)
    if "input_size" in component.extras:
        return []
    divisor_of = component.extras.get("divisor")
    divisor = int(divisor_of(model.preset.model.backbone.params())) if divisor_of else 1
    return [tuple(n + divisor for n in window)]
