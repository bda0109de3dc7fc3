"""Converted networks called like bioim2im's own: a batch ``(B, C, *spatial)`` in, a dict head
-> tensor out, on the batch's device. Block-wise prediction runs them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch

from bioim2im.errors import UserError
from bioim2im.formats.graphs.conversion import as_tuple


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
    """An ONNX graph run by ONNX Runtime, with as many threads as torch uses.

    A graph from a file (``name``, the file in messages) may keep its tensors in other files
    ("external data"): they are read from ``folder``, the model's own folder, never from the
    current directory, and only when they lie inside it (no ``..``, no absolute paths, no links
    out); a graph without a folder (from a zip package or a download) may have none.
    """

    def __init__(
        self,
        graph: bytes | str,
        heads: Sequence[str] | None = None,
        device: Any = "cpu",
        *,
        name: str | None = None,
        folder: Path | None = None,
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
        if name is not None and isinstance(graph, bytes):
            _check_external_data(graph, name, folder)
        if folder is not None:
            options.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", str(folder)
            )
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
            where = f"{name}: " if name is not None else ""
            raise UserError(f"{where}ONNX Runtime cannot load the graph: {first}") from None
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
        found = {}
        for head, output in zip(self.heads, outputs, strict=True):
            output = np.asarray(output)
            if output.dtype.kind not in "biuf":
                raise UserError(
                    f"the ONNX graph's output {head!r} holds {output.dtype} values, not numbers"
                )
            found[head] = torch.from_numpy(output).to(batch.device)
        return found

    def eval(self) -> OnnxRuntimeNetwork:
        return self

    def to(self, device: Any) -> OnnxRuntimeNetwork:
        return self


def _check_external_data(graph: bytes, name: str, folder: Path | None) -> None:
    """Refuse external data a graph names outside ``folder`` (or any, without a folder)."""
    try:
        import onnx
        from onnx.external_data_helper import uses_external_data
    except ImportError:  # ONNX Runtime still refuses paths out of the folder on its own
        return
    try:
        model = onnx.load_model_from_string(graph)
    except Exception:  # not an ONNX graph: ONNX Runtime says so
        return
    tensors = [*model.graph.initializer]
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    for tensor in tensors:
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if folder is None:
            raise UserError(
                f"{name}: its ONNX graph keeps tensor {tensor.name!r} in another file "
                f"({location!r}), which bioim2im reads only beside a graph file in a folder "
                "(not from a zip package or a download)"
            )
        _inside(folder, location, name, tensor.name)


def _inside(folder: Path, location: str, name: str, tensor: str) -> None:
    relative = PurePosixPath(location.replace("\\", "/"))
    root = folder.resolve()
    target = (root / relative).resolve()
    if (
        not location
        or relative.is_absolute()
        or PureWindowsPath(location).drive
        or ".." in relative.parts
        or not target.is_relative_to(root)
    ):
        raise UserError(
            f"{name}: its ONNX graph reads tensor {tensor!r} from {location!r}, outside its "
            f"folder {folder}; external data must be files inside the model's folder"
        )
    if not target.is_file():
        raise UserError(
            f"{name}: its ONNX graph reads tensor {tensor!r} from {location!r}, which is not "
            f"a file in {folder}"
        )
