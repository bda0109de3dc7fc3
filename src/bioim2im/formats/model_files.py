"""Models that are files: bioimage.io packages (:mod:`bioim2im.formats.bioimageio.load`), ONNX
and TorchScript files (:mod:`bioim2im.formats.graphs.load`), told apart by what they hold and
read for ``bioim2im predict``, which runs them through the same block-wise, resumable
prediction as a run."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bioim2im.formats.bioimageio.package import RDF_NAMES

if TYPE_CHECKING:
    import torch

    from bioim2im.formats.trained_model import TrainedModel


def file_kind(path: Path) -> str | None:
    """``package``, ``onnx``, ``torchscript``, or None (a run directory or a checkpoint)."""
    if path.is_dir():
        return "package" if any((path / name).is_file() for name in RDF_NAMES) else None
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".yaml", ".yml"):
        return "package"
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if any(n in RDF_NAMES or n.endswith(".bioimageio.yaml") for n in names):
        return "package"
    # A TorchScript archive holds the code of its modules; a checkpoint (torch.save) has none.
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return None


def is_model_file(path: str | Path) -> bool:
    """Whether ``path`` is a model file or package (not a run directory or a checkpoint)."""
    return file_kind(Path(path)) is not None


def load_model_file(
    path: Path,
    overrides: Sequence[str],
    device: str | torch.device,
    *,
    trust_model: bool = False,
    downloaded: bool = False,
) -> TrainedModel:
    """The model in the file or package ``path``. A TorchScript graph runs only when it holds
    tensor operations alone, unless ``trust_model`` (see
    :mod:`bioim2im.formats.graphs.allowlist`); a ``downloaded`` file has no folder of its own
    (ONNX external data is refused)."""
    import torch

    kind = file_kind(path)
    device = torch.device(device)
    if kind == "package":
        from bioim2im.formats.bioimageio.load import load_package

        return load_package(path, overrides, device, trust_model)
    from bioim2im.formats.graphs.load import load_graph

    folder = None if downloaded else path.parent
    return load_graph(path, kind or "", overrides, device, trust_model, folder)
