"""Models that are files: bioimage.io packages, ONNX and TorchScript files, read for
``bioim2im predict`` and run through the same block-wise, resumable prediction as a run.

- **A TorchScript or ONNX file exported by bioim2im** carries the run's preset and heads
  (:data:`~bioim2im.model.conversion.METADATA_FILE`): it predicts exactly as the run does.
- **A bioimage.io package** (a zip, a folder or its ``rdf.yaml``; model format 0.5, older ones
  converted by bioimageio.spec) is read offline. Its input is normalised with the package's own
  preprocessing (statistics once per image, see :mod:`bioim2im.prediction.bioimageio_ops`),
  its outputs go through the package's postprocessing, and the windows are sizes the package
  allows. Weights: ONNX (ONNX Runtime), TorchScript, or ``pytorch_state_dict`` when its
  architecture is bioim2im's own (:class:`~bioim2im.model.packaged.PackagedNetwork`; no other
  code named by a package is ever imported). A package bioim2im exported also names its heads
  and attaches its preset: the steps bioimage.io cannot express (watershed, size filters) then
  run too, with the run's windows and output types, so its predictions equal the run's.
- **Any other TorchScript or ONNX file** takes the window from ``--set predict.roi_size=[...]``
  (sizes the network takes) and images as they are (``--set data.normalize=...`` to normalise);
  its outputs are probed on one window and named after the graph's outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import posixpath
import sys
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from bioim2im.errors import UserError
from bioim2im.prediction.trained_model import TrainedModel, chain_output, head_outputs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    import torch

    from bioim2im.config.schema import Preset
    from bioim2im.plugin.registry import ComponentRegistry
    from bioim2im.prediction.trained_model import HeadOutput

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
SPATIAL = "zyx"
WINDOW = {2: 256, 3: 128}
"""Default window edge for a package that does not say (the largest size it takes up to this)."""


@contextlib.contextmanager
def bioimageio_calls() -> Iterator[None]:
    """Around calls into bioimageio.spec and bioimageio.core: their logging and warnings kept
    out of the user's way, and the files they leave open closed here. They collect garbage
    after each model they load; the objects alive before are frozen out of the collector's way,
    which makes that milliseconds instead of seconds in a process holding many."""
    from loguru import logger

    logger.disable("bioimageio")
    gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
            gc.collect()
    finally:
        gc.unfreeze()
        logger.enable("bioimageio")


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


@dataclasses.dataclass
class PackagedModel(TrainedModel):
    """A model read from a package or a foreign graph: its own normalisation and window sizes."""

    normalization: Any = None
    """A bioim2im normalisation (``statistics``/``apply``), or None: images as they are."""
    nan_policy: str = "error"
    sizes: list[tuple[int, int] | int] | None = None
    """Per spatial axis (ZYX order): (min, step) or the one size the network takes; None: only
    ``predict.roi_size``."""

    def input_normalization(self) -> tuple[Any, Any]:
        return self.normalization, self.nan_policy

    def window(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        if self.sizes is None:
            return self.roi_size
        window = []
        for roi, n, size in zip(self.roi_size, spatial_shape, self.sizes, strict=True):
            if isinstance(size, int):
                window.append(size)
            else:
                low, step = size
                window.append(low + max(0, math.ceil((min(roi, n) - low) / step)) * step)
        return tuple(window)


def load_model_file(
    path: Path,
    overrides: Sequence[str],
    device: str | torch.device,
    *,
    trust_model: bool = False,
    downloaded: bool = False,
) -> TrainedModel:
    """The model in the file or package ``path``. A TorchScript graph runs only when it holds
    tensor operations alone, unless ``trust_model`` (see :mod:`bioim2im.model.allowlist`); a
    ``downloaded`` file has no folder of its own (ONNX external data is refused)."""
    import torch

    kind = file_kind(path)
    device = torch.device(device)
    if kind == "package":
        return _load_package(path, overrides, device, trust_model)
    folder = None if downloaded else path.parent
    return _load_graph(path, kind or "", overrides, device, trust_model, folder)


# ---------------------------------------------------------------------------------------------
# TorchScript and ONNX files


def _load_graph(
    path: Path,
    kind: str,
    overrides: Sequence[str],
    device: torch.device,
    trust_model: bool,
    folder: Path | None,
) -> TrainedModel:
    from bioim2im.model.conversion import GRAPH_FORMAT, METADATA_FILE
    from bioim2im.model.runtimes import OnnxRuntimeNetwork

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
        runtime, metadata = _torchscript(data, device, trust_model, str(path))
        names = []
    digest = hashlib.sha256(data)
    if isinstance(metadata, dict) and metadata.get("format") == GRAPH_FORMAT:
        return _bioim2im_graph(path, kind, runtime, metadata, overrides, device, digest)
    return _foreign_graph(path, kind, runtime, names, overrides, device, digest)


def _torchscript(
    data: bytes, device: torch.device, trust_model: bool, name: str
) -> tuple[Any, Any]:
    """A TorchScript graph and its metadata, checked unless trusted; one message when it is
    not TorchScript."""
    from bioim2im.model.conversion import load_torchscript

    try:
        return load_torchscript(data, device, trusted=trust_model, name=name)
    except UserError:
        raise
    except RecursionError:
        raise UserError(f"{name}: its bioim2im metadata nests too deeply") from None
    except Exception as exc:  # torch fails in many ways on what is not TorchScript
        raise UserError(f"{name} is not a readable TorchScript file: {_first(exc)}") from None


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
    from bioim2im.model.runtimes import NamedOutputs
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    text, heads = metadata.get("preset", ""), metadata.get("heads", [])
    if not isinstance(text, str) or not isinstance(heads, list):
        raise UserError(
            f"{path}: its bioim2im metadata is damaged (a preset as text and a list of heads)"
        )
    preset = _preset(text, overrides, registry, f"{path}'s preset")
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
    from bioim2im.model.runtimes import NamedOutputs
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    settings = _settings(overrides, allowed=("predict", "data.axes", "data.normalize", "model"))
    predict = _table(settings.get("predict", {}), "predict")
    model = _table(settings.get("model", {}), "model")
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
    specs = _table(model.get("heads", {}), "model.heads")
    for name, output in zip(names, probe, strict=True):
        geometry = _geometry(path, name, tuple(output.shape[2:]), roi)
        spec = _table(specs.get(name, {}), f"model.heads.{name}")
        chain = spec.get("postprocess", [])
        if not isinstance(chain, list):
            raise UserError(
                f"model.heads.{name}.postprocess must be a list of steps, got {chain!r}"
            )
        steps = [(s.get("name"), _build("postprocessor", s, registry)) for s in chain]
        heads[name] = _head(
            name, int(output.shape[1]), geometry, steps, spec.get("output_dtype"), registry
        )
    network = runtime.renamed(names) if kind == "onnx" else NamedOutputs(runtime, names)
    normalize = _table(settings.get("data", {}), "data").get("normalize")
    normalization = _build("transform", normalize, registry) if normalize else None
    preset = _bare_preset(settings, roi, in_channels)
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


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"--set {key}: must be a table, got {value!r}")
    return value


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
            f"{_first(exc)} (set predict.roi_size to a size it takes, model.in_channels to its "
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


# ---------------------------------------------------------------------------------------------
# bioimage.io packages


def _load_package(
    path: Path, overrides: Sequence[str], device: torch.device, trust_model: bool
) -> TrainedModel:
    # Everything the package holds is read in here, and its zip let go.
    with bioimageio_calls(), _PackageFiles(path) as files:
        return _read_package(files, overrides, device, trust_model)


class _PackageFiles:
    """The files of a package: members of its zip, or files under its folder; nothing else.

    A package names its files (weights, attachments) relative to its description. A URL, an
    absolute path, a ``..`` that leads out, or a link out of the folder is refused: a package
    may only use what it holds, and bioim2im fetches nothing a package names. A zip is bounded
    before anything is inflated (:func:`bioim2im.model.archives.check_zip`). Each file read is
    checked against the SHA-256 the description gives, and goes into :attr:`digest`.
    """

    def __init__(self, path: Path) -> None:
        from bioim2im.model.archives import check_zip

        self.path = path
        self.archive: zipfile.ZipFile | None = None
        self.root: Path | None = None
        self.digest = hashlib.sha256()
        if path.is_dir():
            self.root = path
            self.rdf: Path = path / next(n for n in RDF_NAMES if (path / n).is_file())
        elif path.suffix.lower() in (".yaml", ".yml"):
            self.root, self.rdf = path.parent, path
        else:
            try:
                self.archive = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise UserError(f"{path} is not a readable zip package: {_first(exc)}") from None
            try:
                check_zip(self.archive, str(path))
            except UserError:
                self.archive.close()
                raise
            with open(path, "rb") as handle:
                while piece := handle.read(1 << 20):
                    self.digest.update(piece)

    def __enter__(self) -> _PackageFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.archive is not None:
            self.archive.close()

    def description(self) -> Any:
        """The package's description (model format 0.5; older ones converted), read offline."""
        try:
            from bioimageio.spec import InvalidDescr, ValidationContext, load_model_description
            from bioimageio.spec.model.v0_5 import ModelDescr
        except ImportError:
            raise UserError(
                f"{self.path}: reading bioimage.io packages needs bioimageio.spec: pip install "
                "'bioim2im[bioimageio]'"
            ) from None
        if self.archive is None:
            text = self._file(self.rdf.name, "description")
            self.digest.update(text)
        else:
            text = self._member(_rdf_member(self.archive, self.path), "description")
        _check_yaml(text, self.path)
        source: Any = self.archive if self.archive is not None else self.rdf
        # No I/O checks (they would fetch what the package names) and no cache.
        context = ValidationContext(perform_io_checks=False, disable_cache=True)
        try:
            with context:
                descr = load_model_description(
                    source, perform_io_checks=False, format_version="latest"
                )
        except Exception as exc:  # bioimageio.spec refuses what is not a model description
            raise UserError(
                f"{self.path} is not a readable bioimage.io model: {_first(exc)}"
            ) from None
        if isinstance(descr, InvalidDescr) or not isinstance(descr, ModelDescr):
            summary = getattr(descr, "validation_summary", None)
            errors = (
                [f"{d.name}: {e.msg}" for d in summary.details for e in d.errors] if summary else []
            )
            raise UserError(
                f"{self.path} is not a valid bioimage.io model (format 0.5):", errors[:10]
            )
        return descr

    def read(self, source: Any, sha256: Any, what: str) -> bytes:
        """The bytes of the file a package names as ``source`` (its ``what`` in messages)."""
        name = self.member(source, what)
        data = self._member(name, what) if self.archive is not None else self._file(name, what)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != str(sha256):
            raise UserError(
                f"{self.path}: its {what} {name} does not have the SHA-256 its description "
                "gives (changed after the package was made?)"
            )
        if self.archive is None:  # a zip's bytes are in the digest already
            self.digest.update(data)
        return data

    def local_folder(self, source: Any, what: str) -> Path | None:
        """The folder holding the file ``source`` names, for a package that is a folder."""
        if self.root is None:
            return None
        return (self.root / self.member(source, what)).parent

    def label(self, source: Any) -> str:
        """How messages name a file of the package."""
        if self.root is None:
            return f"{self.path} ({source})"
        return str(self.root / str(source))

    def member(self, source: Any, what: str) -> str:
        """``source`` as a path inside the package, or a refusal saying why it is not one."""
        text = str(source)
        if "://" in text or text.lower().startswith(("http:", "https:", "file:")):
            raise UserError(
                f"{self.path}: its {what} is at {text}; a package may only use files inside "
                "itself (bioim2im fetches nothing a package names)"
            )
        relative = PurePosixPath(text.replace("\\", "/"))
        if relative.is_absolute() or PureWindowsPath(text).drive:
            raise UserError(
                f"{self.path}: its {what} is {text}, outside the package; a package may only "
                "use files inside itself"
            )
        parts = [p for p in relative.parts if p not in ("", ".")]
        depth = 0
        for part in parts:
            depth += -1 if part == ".." else 1
            if depth < 0:
                raise UserError(
                    f"{self.path}: its {what} {text} leads outside the package; a package may "
                    "only use files inside itself"
                )
        if not parts:
            raise UserError(f"{self.path}: its {what} names no file ({text!r})")
        return posixpath.normpath("/".join(parts))

    def _member(self, name: str, what: str) -> bytes:
        assert self.archive is not None
        try:
            return self.archive.read(name)
        except KeyError:
            raise UserError(f"{self.path}: its {what} {name} is not in the package") from None
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
            raise UserError(
                f"{self.path}: its {what} {name} cannot be read: {_first(exc)}"
            ) from None

    def _file(self, name: str, what: str) -> bytes:
        assert self.root is not None
        root = self.root.resolve()
        target = (root / name).resolve()
        if not target.is_relative_to(root):
            raise UserError(
                f"{self.path}: its {what} {name} links to {target}, outside the package; a "
                "package may only use files inside itself"
            )
        if not target.is_file():
            raise UserError(f"{self.path}: its {what} {name} is not a file in the package")
        from bioim2im.model.archives import LIMIT_VARIABLE, limit_bytes

        if target.stat().st_size > limit_bytes():
            raise UserError(
                f"{self.path}: its {what} {name} is larger than the {limit_bytes() >> 20} MiB "
                f"bioim2im reads from a package ({LIMIT_VARIABLE}=N raises the limit to N MiB)"
            )
        try:
            return target.read_bytes()
        except OSError as exc:
            raise UserError(f"{self.path}: its {what} {name} cannot be read: {exc}") from None


MAX_DESCRIPTION_VALUES = 100_000
"""Most values a package's description may hold once its YAML aliases are expanded (an
exported one holds a few hundred)."""


def _rdf_member(archive: zipfile.ZipFile, path: Path) -> str:
    """The description's name in a zip package, as bioimageio.spec finds it."""
    names = sorted(archive.namelist())
    for wanted in (*RDF_NAMES, ".bioimageio.yaml"):
        for name in names:
            if name == wanted or (wanted.startswith(".") and name.endswith(wanted)):
                return name
    raise UserError(f"{path}: the zip holds no rdf.yaml or bioimageio.yaml")


def _check_yaml(data: bytes, path: Path) -> None:
    """Refuse a description whose YAML aliases expand to more than
    :data:`MAX_DESCRIPTION_VALUES` values (a "billion laughs"), before anything expands them."""
    try:
        from ruyaml import YAML
        from ruyaml.error import YAMLError
    except ImportError:  # bioimageio.spec brings ruyaml; without it nothing reads the package
        return
    try:
        root = YAML(typ="safe").compose(data.decode("utf-8", "replace"))
    except (YAMLError, ValueError, RecursionError):
        return  # bioimageio.spec says what is wrong with it
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a node that refers to itself counts once
        total = 1
        if isinstance(node.value, list):
            for item in node.value:
                pair = item if isinstance(item, tuple) else (item,)
                total += sum(size(n) for n in pair)
                if total > MAX_DESCRIPTION_VALUES:
                    break
        sizes[id(node)] = total
        return total

    try:
        values = size(root) if root is not None else 0
    except RecursionError:
        raise UserError(f"{path}: its description nests too deeply") from None
    if values > MAX_DESCRIPTION_VALUES:
        raise UserError(
            f"{path}: its description expands to more than {MAX_DESCRIPTION_VALUES} values "
            "(YAML aliases repeating each other)"
        )


def _read_package(
    files: _PackageFiles, overrides: Sequence[str], device: torch.device, trust_model: bool
) -> TrainedModel:
    from bioim2im.plugin.manager import get_registry
    from bioim2im.prediction.bioimageio_ops import Preprocessing, postprocessing_steps

    path = files.path
    descr = files.description()
    registry = get_registry()
    if len(descr.inputs) != 1:
        raise UserError(f"{path}: models with {len(descr.inputs)} inputs are not supported (one)")
    tensor = descr.inputs[0]
    layout = _input_layout(path, tensor)
    own = _own_config(path, descr)
    preset = None
    if own is not None:
        text = _read_file(files, descr, own["preset"])
        if text is not None:
            preset = _preset(text, overrides, registry, f"the preset attached to {path}")
    operations = [_operation(p) for p in tensor.preprocessing]
    normalization = Preprocessing(operations, layout.axis_ids)
    heads: dict[str, HeadOutput] = {}
    names: list[str] = []
    for output in descr.outputs:
        geometry, axis_ids, order = _output_layout(path, output, layout)
        name = str(output.id)
        steps: list[tuple[str | None, Any]] = [
            (None, s)
            for s in postprocessing_steps([_operation(p) for p in output.postprocessing], axis_ids)
        ]
        dtype = _dtype(output)
        head_name = name
        if preset is not None and own is not None:
            entry = own["outputs"].get(name, {})
            head_name = entry.get("head", name)
            if head_name not in preset.model.heads:
                raise UserError(
                    f"{path}: output {name!r} names head {head_name!r}, not in its preset"
                )
            head = preset.model.heads[head_name]
            remaining = head.postprocess[entry.get("expressed_steps", 0) :]
            steps += [(s.name, registry.build("postprocessor", s)) for s in remaining]
            dtype = head.output_dtype
        heads[head_name] = _head(head_name, _channels(output), geometry, steps, dtype, registry)
        layout.outputs.append(order)
        layout.output_channels.append(_channels(output))
        names.append(head_name)
    network = _package_network(files, descr, layout, names, overrides, device, trust_model)
    settings = _settings(overrides, allowed=("predict", "data.axes")) if preset is None else {}
    if preset is None:
        if layout.one_window_at_a_time:
            predict = _table(settings.get("predict", {}), "predict")
            settings["predict"] = {"batch_size": 1, **predict}
        preset = _bare_preset(settings, _default_window(layout, descr), layout.in_channels)
        preset = _overlap_for_halo(preset, layout, settings)
    digest = files.digest
    digest.update(json.dumps(list(overrides)).encode())
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
        nan_policy=preset.data.nan_policy,
        sizes=layout.sizes,
    )


@dataclasses.dataclass
class _OutputOrder:
    """The permutation from an output's axis order to (B, C, *spatial) (the axes it has), and
    whether it has a batch and a channel axis."""

    permutation: list[int]
    batch: bool
    channel: bool


@dataclasses.dataclass
class _InputLayout:
    tensor: str
    ids: list[str]
    """The input's axis ids, in its order."""
    types: list[str]
    channel_id: str
    space_ids: list[str]
    """Spatial axis ids in bioim2im's order (Z, Y, X)."""
    sizes: list[tuple[int, int] | int]
    in_channels: int
    scales: dict[str, float]
    halos: dict[str, int] = dataclasses.field(default_factory=dict)
    """Largest output halo seen per input axis, in input voxels."""
    one_window_at_a_time: bool = False
    """The batch axis is fixed at 1."""
    outputs: list[_OutputOrder] = dataclasses.field(default_factory=list)
    """Per output, how its axes become (B, C, *spatial)."""
    output_channels: list[int] = dataclasses.field(default_factory=list)

    @property
    def axis_ids(self) -> tuple[str, ...]:
        return (self.channel_id, *self.space_ids)


def _input_layout(path: Path, tensor: Any) -> _InputLayout:
    ids, types = [str(a.id) for a in tensor.axes], [a.type for a in tensor.axes]
    unsupported = [
        f"{i} ({t})"
        for i, t in zip(ids, types, strict=True)
        if t not in ("batch", "channel", "space")
    ]
    if unsupported:
        raise UserError(
            f"{path}: input axes {', '.join(unsupported)} are not supported (batch, channel and 2 or 3 space axes)"
        )
    space = [a for a in tensor.axes if a.type == "space"]
    if len(space) not in (2, 3):
        raise UserError(f"{path}: the input has {len(space)} space axes; 2 or 3 are supported")
    ordered = sorted(space, key=lambda a: SPATIAL.index(str(a.id)) if str(a.id) in SPATIAL else 0)
    sizes: list[tuple[int, int] | int] = []
    for axis in ordered:
        size = axis.size
        if isinstance(size, int):
            sizes.append(size)
        elif hasattr(size, "step"):
            sizes.append((int(size.min), int(size.step)))
        else:
            raise UserError(
                f"{path}: input axis {axis.id} is sized by another tensor; not supported"
            )
    channels = [a for a in tensor.axes if a.type == "channel"]
    batch = [a for a in tensor.axes if a.type == "batch"]
    return _InputLayout(
        one_window_at_a_time=bool(batch) and getattr(batch[0], "size", None) == 1,
        tensor=str(tensor.id),
        ids=ids,
        types=types,
        channel_id=str(channels[0].id) if channels else "channel",
        space_ids=[str(a.id) for a in ordered],
        sizes=sizes,
        in_channels=len(channels[0].channel_names) if channels else 1,
        scales={str(a.id): float(a.scale) for a in space},
    )


def _output_layout(
    path: Path, output: Any, layout: _InputLayout
) -> tuple[Any, tuple[str, ...], _OutputOrder]:
    """The head geometry of ``output``, its axis ids as (channel, *kept spatial), and the
    permutation from its axis order to (B, C, *kept spatial)."""
    from bioim2im.prediction.blockwise import HeadGeometry

    kept: list[int] = []
    scale: list[int] = []
    channel_id = "channel"
    by_type: dict[str, list[int]] = {"batch": [], "channel": [], "space": []}
    positions: dict[str, int] = {}
    for index, axis in enumerate(output.axes):
        if axis.type not in by_type:
            raise UserError(f"{path}: output {output.id} has a {axis.type} axis; not supported")
        by_type[axis.type].append(index)
        positions[str(axis.id)] = index
        if axis.type == "channel":
            channel_id = str(axis.id)
        if axis.type != "space":
            continue
        size = axis.size
        reference = getattr(size, "axis_id", None)
        if reference is None or str(size.tensor_id) != layout.tensor or int(size.offset) != 0:
            raise UserError(
                f"{path}: output {output.id} axis {axis.id} is not sized as an input axis "
                "(fixed sizes, offsets and other tensors are not supported)"
            )
        if str(reference) not in layout.space_ids:
            raise UserError(f"{path}: output {output.id} axis {axis.id} refers to a non-space axis")
        factor = layout.scales[str(reference)] / float(axis.scale)
        if abs(factor - round(factor)) > 1e-6 or round(factor) < 1:
            raise UserError(
                f"{path}: output {output.id} axis {axis.id} has scale factor {factor}; only whole upsampling is supported"
            )
        kept.append(layout.space_ids.index(str(reference)))
        scale.append(round(factor))
        halo = int(getattr(axis, "halo", 0) or 0)
        if halo:
            before = layout.halos.get(str(reference), 0)
            layout.halos[str(reference)] = max(before, math.ceil(halo / round(factor)))
    dims = len(layout.space_ids)
    if sorted(kept) != kept or kept != list(range(dims - len(kept), dims)):
        raise UserError(
            f"{path}: output {output.id} keeps spatial axes {kept}; only dropping leading ones is supported"
        )
    space_positions = [positions[i] for i in [str(a.id) for a in output.axes if a.type == "space"]]
    axes = _OutputOrder(
        by_type["batch"] + by_type["channel"] + space_positions,
        batch=bool(by_type["batch"]),
        channel=bool(by_type["channel"]),
    )
    geometry = HeadGeometry(
        scale=(1,) * (dims - len(kept)) + tuple(scale), dropped_axes=tuple(range(dims - len(kept)))
    )
    ids = (channel_id, *[str(a.id) for a in output.axes if a.type == "space"])
    return geometry, ids, axes


def _channels(output: Any) -> int:
    channels = [a for a in output.axes if a.type == "channel"]
    return len(channels[0].channel_names) if channels else 1


def _dtype(output: Any) -> str | None:
    dtype = str(output.dtype)
    return dtype if dtype in ("float32", "uint8", "uint16", "uint32", "float16") else None


def _operation(descr: Any) -> dict[str, Any]:
    return descr.model_dump(mode="json", exclude_none=True)


def _own_config(path: Path, descr: Any) -> dict[str, Any] | None:
    """``config.bioim2im`` of a package bioim2im exported, checked: ``preset`` (the attached
    preset's file) and ``outputs`` (per output, its ``head`` and its ``expressed_steps``)."""
    extra = descr.config.model_extra or {}
    own = extra.get("bioim2im")
    if own is None:
        return None
    where = f"{path}: config.bioim2im"
    if not isinstance(own, dict):
        raise UserError(f"{where} must be a table, got {_short(own)}")
    preset = own.get("preset", "")
    if not isinstance(preset, str):
        raise UserError(
            f"{where}.preset must be the attached preset's file name, got {_short(preset)}"
        )
    outputs = own.get("outputs", {})
    if not isinstance(outputs, dict):
        raise UserError(f"{where}.outputs must be a table of the outputs, got {_short(outputs)}")
    checked = {}
    for name, entry in outputs.items():
        head = entry.get("head", name) if isinstance(entry, dict) else None
        steps = entry.get("expressed_steps", 0) if isinstance(entry, dict) else None
        if (
            not isinstance(head, str)
            or not isinstance(steps, int)
            or isinstance(steps, bool)
            or steps < 0
        ):
            raise UserError(
                f"{where}.outputs.{name} must be a table with a head name and a count of "
                f"expressed_steps, got {_short(entry)}"
            )
        checked[str(name)] = {"head": head, "expressed_steps": steps}
    return {"preset": preset, "outputs": checked}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _read_file(files: _PackageFiles, descr: Any, name: str) -> str | None:
    """The text of the package's attachment ``name``, or None when it has none of that name."""
    for attachment in descr.attachments:
        if str(attachment.source) == name:
            data = files.read(attachment.source, attachment.sha256, "attachment")
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{files.path}: its attachment {name} is not UTF-8 text") from None
    return None


def _backend_choice(overrides: Sequence[str]) -> str:
    """``predict.backend`` as the user set it (--set), else auto: which of a package's weights
    run is the user's choice, not the preset's that trained it."""
    from bioim2im.config.loading import apply_override
    from bioim2im.prediction.backends import BACKENDS

    table: dict[str, Any] = {}
    for text in overrides:
        table = apply_override(table, text)
    predict = table.get("predict", {})
    choice = predict.get("backend", "auto") if isinstance(predict, dict) else "auto"
    if choice not in BACKENDS:
        raise UserError(f"predict.backend must be one of {', '.join(BACKENDS)}, got {choice!r}")
    return str(choice)


def weights_order(choice: str, device: torch.device) -> list[str]:
    """The weights formats of a package to try, best first, for ``predict.backend = choice``
    on ``device``: ONNX (ONNX Runtime) first wherever ONNX Runtime runs, and bioim2im's own
    architecture (a state dict, no code) before TorchScript in torch."""
    if choice == "onnxruntime":
        return ["onnx"]
    in_torch = ["pytorch_state_dict", "torchscript"]
    if choice == "torch":
        return in_torch
    if _onnxruntime_runs_on(device):
        return ["onnx", *in_torch]
    return [*in_torch, "onnx"]


def _onnxruntime_runs_on(device: torch.device) -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    if device.type == "cpu":
        return True
    return (
        device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    )


def _package_network(
    files: _PackageFiles,
    descr: Any,
    layout: _InputLayout,
    heads: list[str],
    overrides: Sequence[str],
    device: torch.device,
    trust_model: bool,
) -> Any:
    """The package's network, called like bioim2im's: the first of its weights formats in
    :func:`weights_order`."""
    from bioim2im.model.conversion import as_tuple
    from bioim2im.model.runtimes import OnnxRuntimeNetwork

    path = files.path
    choice = _backend_choice(overrides)
    weights = descr.weights
    order = weights_order(choice, device)
    available = [w for w in order if getattr(weights, w, None) is not None and _usable(w, weights)]
    if not available:
        raise UserError(
            f"{path}: no weights bioim2im can run with predict.backend = {choice!r} (it runs "
            "onnx, torchscript, and pytorch_state_dict weights of bioim2im's own architecture)"
        )
    chosen = available[0]
    entry = getattr(weights, chosen)
    data = files.read(entry.source, entry.sha256, f"{chosen} weights")
    label = files.label(entry.source)
    if chosen == "onnx":
        folder = files.local_folder(entry.source, "onnx weights")
        graph = OnnxRuntimeNetwork(data, None, device, name=label, folder=folder)

        def run(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(graph(batch).values())

    else:
        module = (
            _torchscript(data, device, trust_model, label)[0]
            if chosen == "torchscript"
            else _state_dict_network(label, entry, data, device)
        )

        def run(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return as_tuple(module(batch))

    network = _Reordered(run, layout, heads)
    _probe_package(files.path, network, layout)
    return network


MAX_WINDOW_VALUES = 1 << 28
"""Most values (channels x voxels) of the one window a package's network is tried on."""


def _probe_package(path: Path, network: _Reordered, layout: _InputLayout) -> None:
    """Run the network once on the smallest window its description allows, so that a network
    that does not do what its description says is found before any prediction starts."""
    import torch

    window = [size if isinstance(size, int) else size[0] for size in layout.sizes]
    if any(n < 1 for n in window) or layout.in_channels * math.prod(window) > MAX_WINDOW_VALUES:
        raise UserError(
            f"{path}: its description's smallest input ({layout.in_channels} channel(s) x "
            f"{window}) is not a window bioim2im can predict with"
        )
    batch = torch.zeros((1, layout.in_channels, *window))
    try:
        with torch.inference_mode():
            network(batch)
    except UserError as exc:
        raise UserError(f"{path}: {exc.message}", exc.problems) from None


def _usable(name: str, weights: Any) -> bool:
    if name != "pytorch_state_dict":
        return True
    architecture = weights.pytorch_state_dict.architecture
    return (
        getattr(architecture, "import_from", None) == "bioim2im.model.packaged"
        and str(architecture.callable) == "PackagedNetwork"
    )


def _state_dict_network(label: str, weights: Any, data: bytes, device: torch.device) -> Any:
    import io

    import torch

    from bioim2im.model.packaged import PackagedNetwork

    kwargs = weights.architecture.kwargs
    where = f"{label}: its architecture's kwargs"
    patch_size, model = kwargs.get("patch_size", []), kwargs.get("model", {})
    if not isinstance(patch_size, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in patch_size
    ):
        raise UserError(f"{where}: patch_size must be a list of sizes, got {_short(patch_size)}")
    if not isinstance(model, dict):
        raise UserError(f"{where}: model must be a preset's [model] table, got {_short(model)}")
    try:
        network = PackagedNetwork(patch_size, model)
    except UserError as exc:
        raise UserError(f"{where}: {exc.message}", exc.problems) from None
    except MemoryError:
        raise
    except Exception as exc:  # what the registered components refuse to build
        raise UserError(f"{where}: the network cannot be built: {_first(exc)}") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # not a torch file, or one holding more than tensors and plain values
        raise UserError(
            f"{label}: its pytorch_state_dict weights are not a file of tensors that torch "
            "reads weights-only"
        ) from None
    try:
        network.load_state_dict(state)
    except Exception as exc:  # a state dict that does not fit its architecture
        raise UserError(
            f"{label}: its pytorch_state_dict weights do not fit its architecture: {_first(exc)}"
        ) from None
    return network.to(device).eval()


class _Reordered:
    """A package's network called with bioim2im's (B, C, *spatial ZYX) batches: the input
    reordered to the package's axes, each output back to (B, C, *spatial)."""

    def __init__(self, run: Any, layout: _InputLayout, heads: list[str]) -> None:
        self.run = run
        self.heads = heads
        self.layout = layout
        ours = ["batch", "channel", *layout.space_ids]
        theirs = [t if t != "space" else i for t, i in zip(layout.types, layout.ids, strict=True)]
        self.has_batch = "batch" in theirs
        self.has_channel = "channel" in theirs
        present = [a for a in ours if a in theirs]
        self.squeeze = [i for i, a in enumerate(ours) if a not in theirs]
        self.permutation = [present.index(a) for a in theirs]

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        if not self.has_batch:
            parts = [self._one(batch[i : i + 1]) for i in range(batch.shape[0])]
            return {h: torch.cat([p[h] for p in parts]) for h in self.heads}
        return self._one(batch)

    def _one(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        tensor = batch
        for axis in reversed(self.squeeze):
            tensor = tensor.squeeze(axis)
        shaped = tensor.permute(*self.permutation).contiguous()
        try:
            outputs = self.run(shaped)
        except UserError:
            raise
        except Exception as exc:  # the network refuses what its description describes
            if _out_of_memory(exc):
                raise
            raise UserError(
                f"the package's network does not run on an input shaped as its description "
                f"says ({tuple(shaped.shape)}): {_first(exc)}"
            ) from None
        if len(outputs) != len(self.heads):
            raise UserError(
                f"the package's network gives {len(outputs)} outputs, its description "
                f"{len(self.heads)}"
            )
        result = {}
        for index, head in enumerate(self.heads):
            order = self.layout.outputs[index]
            output = outputs[index]
            if output.ndim != len(order.permutation):
                raise UserError(
                    f"the package's network gives output {head!r} {output.ndim} axes, its "
                    f"description {len(order.permutation)}"
                )
            output = output.permute(*order.permutation)
            if not order.batch:
                output = output.unsqueeze(0)
            if not order.channel:
                output = output.unsqueeze(1)
            channels = self.layout.output_channels[index]
            if output.shape[0] != batch.shape[0] or output.shape[1] != channels:
                raise UserError(
                    f"the package's network gives output {head!r} a batch of "
                    f"{output.shape[0]} with {output.shape[1]} channel(s) for a batch of "
                    f"{batch.shape[0]}; its description says {channels} channel(s)"
                )
            result[head] = output
        return result

    def eval(self) -> _Reordered:
        return self

    def to(self, device: Any) -> _Reordered:
        return self


def _default_window(layout: _InputLayout, descr: Any) -> list[int]:
    edge = WINDOW[len(layout.space_ids)]
    window = []
    for size in layout.sizes:
        if isinstance(size, int):
            window.append(size)
        else:
            low, step = size
            window.append(low + max(0, (edge - low) // step) * step)
    return window


def _overlap_for_halo(preset: Preset, layout: _InputLayout, settings: Mapping[str, Any]) -> Preset:
    """Windows overlapping by at least twice a package's halo, unless --set chose."""
    if "overlap" in settings.get("predict", {}) or not layout.halos:
        return preset
    window = preset.predict.roi_size or preset.data.patch_size
    needed = max(
        (
            2 * layout.halos.get(axis, 0) / n
            for axis, n in zip(layout.space_ids, window, strict=True)
        ),
        default=0.0,
    )
    overlap = min(0.5, max(float(preset.predict.overlap), needed))  # type: ignore[arg-type]
    predict = preset.predict.model_copy(update={"overlap": overlap})
    return preset.model_copy(update={"predict": predict})


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _head(
    name: str,
    channels: int,
    geometry: Any,
    steps: Sequence[tuple[str | None, Any]],
    output_dtype: str | None,
    registry: ComponentRegistry,
) -> HeadOutput:
    """A head whose steps are ``(registered postprocessor or None, function)``: the package's
    operations (pointwise) first, then registered ones, split where they stop being pointwise."""
    return chain_output(name, channels, geometry, steps, output_dtype, registry)


def _settings(overrides: Sequence[str], allowed: Sequence[str]) -> dict[str, Any]:
    """``--set`` values as a table, refused where they do not apply to this kind of model."""
    from bioim2im.config.loading import apply_override

    table: dict[str, Any] = {}
    for text in overrides:
        table = apply_override(table, text)
    for section, value in table.items():
        keys = [section] if not isinstance(value, dict) else [f"{section}.{k}" for k in value]
        for key in keys:
            if not any(key == a or key.startswith(f"{a}.") or a == section for a in allowed):
                raise UserError(
                    f"--set {key}: does not apply to this model (it takes {', '.join(allowed)})"
                )
    return table


def _bare_preset(settings: Mapping[str, Any], window: Sequence[int], in_channels: int) -> Preset:
    """The preset sections prediction reads, for a model that brings none: the window, the
    prediction settings and the input axes."""
    from pydantic import ValidationError

    from bioim2im.config.schema import (
        ComponentSpec,
        DataConfig,
        ModelConfig,
        PredictConfig,
        Preset,
    )

    predict = dict(settings.get("predict", {}))
    predict.setdefault("roi_size", list(window))
    data = {"patch_size": list(predict["roi_size"])}
    if "axes" in settings.get("data", {}):
        data["axes"] = settings["data"]["axes"]
    try:
        predict_config = PredictConfig.model_validate(predict)
        data_config = DataConfig.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        ]
        raise UserError("--set values do not fit:", problems) from None
    if len(predict_config.roi_size or []) != len(window):
        raise UserError(
            f"predict.roi_size needs {len(window)} numbers, got {predict_config.roi_size}"
        )
    model = ModelConfig.model_construct(
        in_channels=in_channels,
        features=1,
        backbone=ComponentSpec.model_construct(name="packaged"),
        heads={},
    )
    return Preset.model_construct(
        description=None,
        data=data_config,
        model=model,
        predict=predict_config,
        adversarial=None,
    )


def _preset(
    text: str, overrides: Sequence[str], registry: ComponentRegistry, source: str
) -> Preset:
    from bioim2im.config.loading import apply_override, validate

    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise UserError(f"{source} is not valid TOML: {exc}") from None
    for override in overrides:
        data = apply_override(data, override)
    return validate(data, registry, source)


def _build(kind: str, spec: Any, registry: ComponentRegistry) -> Any:
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise UserError(f"a {kind} is a table with a name, got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    return registry.get(kind, str(spec["name"])).build(params)


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate" in text


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
