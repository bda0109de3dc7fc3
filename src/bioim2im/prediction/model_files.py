"""Models that are files: bioimage.io packages, ONNX and TorchScript files."""

from __future__ import annotations

import zipfile
from pathlib import Path

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


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
    return file_kind(Path(path)) is not None


def load_model_file(path, overrides, device):  # type: ignore[no-untyped-def]
    raise NotImplementedError
