"""Converted networks called like bioim2im's own: a batch ``(B, C, *spatial)`` in, a dict head
-> tensor out, on the batch's device. Block-wise prediction runs them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bioim2im.errors import UserError
from bioim2im.model.conversion import as_tuple


class NamedOutputs:
    """A callable returning its outputs by position (a tensor, a tuple or a dict), answering
    with a dict of them by ``heads``."""

    def __init__(self, function: Any, heads: Sequence[str]) -> None:
        self.function = function
        self.heads = list(heads)

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = as_tuple(self.function(batch))
        if len(outputs) != len(self.heads):
            raise ValueError(
                f"the network returned {len(outputs)} outputs, expected {len(self.heads)} "
                f"({', '.join(self.heads)})"
            )
        return dict(zip(self.heads, outputs, strict=True))

    def eval(self) -> NamedOutputs:
        return self

    def to(self, device: Any) -> NamedOutputs:
        if isinstance(self.function, torch.nn.Module):
            self.function.to(device)
        return self


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxRuntimeNetwork:
    """An ONNX graph run by ONNX Runtime, with as many threads as torch uses."""

    def __init__(
        self, graph: bytes | str, heads: Sequence[str] | None = None, device: Any = "cpu"
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(
                "running ONNX needs the onnxruntime package: pip install 'bioim2im[onnx]'"
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError(
                    "this onnxruntime runs on the CPU only: predict on the CPU, install "
                    'onnxruntime-gpu, or set predict.backend = "torch"'
                )
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(graph, options, providers=providers)
        except Exception as exc:  # onnxruntime reports a bad file in its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"ONNX Runtime cannot load the graph: {first}") from None
        self.input_name = self.session.get_inputs()[0].name
        names = [output.name for output in self.session.get_outputs()]
        self.heads = list(heads) if heads is not None else names
        if len(self.heads) != len(names):
            raise UserError(
                f"the ONNX graph has {len(names)} outputs ({', '.join(names)}), expected "
                f"{len(self.heads)} ({', '.join(self.heads)})"
            )

    def renamed(self, heads: Sequence[str]) -> OnnxRuntimeNetwork:
        """This network answering with ``heads`` as the names of its outputs, in order."""
        if len(heads) != len(self.heads):
            raise UserError(
                f"the ONNX graph has {len(self.heads)} outputs ({', '.join(map(str, self.heads))}), "
                f"expected {len(heads)} ({', '.join(heads)})"
            )
        self.heads = list(heads)
        return self

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        array = batch.detach().to("cpu", torch.float32).numpy()
        outputs = self.session.run(None, {self.input_name: array})
        return {
            head: torch.from_numpy(output).to(batch.device)
            for head, output in zip(self.heads, outputs, strict=True)
        }

    def eval(self) -> OnnxRuntimeNetwork:
        return self

    def to(self, device: Any) -> OnnxRuntimeNetwork:
        return self
