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
import sys
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
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
    path: Path, overrides: Sequence[str], device: str | torch.device
) -> TrainedModel:
    import torch

    kind = file_kind(path)
    device = torch.device(device)
    if kind == "package":
        return _load_package(path, overrides, device)
    return _load_graph(path, kind or "", overrides, device)


# ---------------------------------------------------------------------------------------------
# TorchScript and ONNX files


def _load_graph(
    path: Path, kind: str, overrides: Sequence[str], device: torch.device
) -> TrainedModel:
    from bioim2im.model.conversion import GRAPH_FORMAT, METADATA_FILE, load_torchscript
    from bioim2im.model.runtimes import OnnxRuntimeNetwork

    data = path.read_bytes()
    runtime: Any
    if kind == "onnx":
        runtime = OnnxRuntimeNetwork(data, None, device)
        try:
            metadata = json.loads(runtime.metadata.get(METADATA_FILE) or "null")
        except json.JSONDecodeError:
            metadata = None
        names = list(runtime.heads)
    else:
        try:
            runtime, metadata = load_torchscript(data, device)
        except Exception as exc:  # torch fails in many ways on what is not TorchScript
            raise UserError(f"{path} is not a readable TorchScript file: {_first(exc)}") from None
        names = []
    digest = hashlib.sha256(data)
    if isinstance(metadata, dict) and metadata.get("format") == GRAPH_FORMAT:
        return _bioim2im_graph(path, kind, runtime, metadata, overrides, device, digest)
    return _foreign_graph(path, kind, runtime, names, overrides, device, digest)


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
    preset = _preset(str(metadata.get("preset", "")), overrides, registry, f"{path}'s preset")
    heads = [str(h) for h in metadata.get("heads", [])]
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
    import torch

    from bioim2im.model.conversion import as_tuple
    from bioim2im.model.runtimes import NamedOutputs
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    settings = _settings(overrides, allowed=("predict", "data.axes", "data.normalize", "model"))
    roi = settings.get("predict", {}).get("roi_size")
    if not roi:
        raise UserError(
            f"{path} does not say which image sizes it takes: give the window, e.g. --set "
            "predict.roi_size=[256,256] (a size the network takes; 3 numbers for 3D)"
        )
    in_channels = settings.get("model", {}).get("in_channels", 1)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise UserError(f"model.in_channels must be a positive integer, got {in_channels!r}")
    try:
        with torch.inference_mode():
            probe = as_tuple(runtime(torch.zeros((1, in_channels, *roi), device=device)))
    except UserError:
        raise
    except Exception as exc:  # the graph refuses the window: say which
        raise UserError(
            f"{path} does not run on a window of {in_channels} channel(s) x {roi}: {_first(exc)} "
            "(set predict.roi_size to a size it takes, model.in_channels to its channels)"
        ) from None
    if not names:
        names = ["output"] if len(probe) == 1 else [f"output{i}" for i in range(len(probe))]
    heads = {}
    for name, output in zip(names, probe, strict=True):
        geometry = _geometry(path, name, tuple(output.shape[2:]), roi)
        spec = settings.get("model", {}).get("heads", {}).get(name, {})
        steps = [
            (s.get("name"), _build("postprocessor", s, registry))
            for s in spec.get("postprocess", [])
        ]
        heads[name] = _head(
            name, int(output.shape[1]), geometry, steps, spec.get("output_dtype"), registry
        )
    network = runtime.renamed(names) if kind == "onnx" else NamedOutputs(runtime, names)
    normalize = settings.get("data", {}).get("normalize")
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


def _geometry(path: Path, name: str, shape: tuple[int, ...], roi: Sequence[int]) -> Any:
    from bioim2im.prediction.blockwise import HeadGeometry

    dropped = len(roi) - len(shape)
    scale = []
    for size, window in zip(shape, roi[dropped:], strict=True):
        if size % window or size < window:
            raise UserError(
                f"{path}: output {name!r} has spatial shape {shape} for a window of {tuple(roi)}; "
                "only outputs of the window's size, or a whole multiple of it, are supported"
            )
        scale.append(size // window)
    if dropped < 0:
        raise UserError(f"{path}: output {name!r} has more spatial axes than its input")
    return HeadGeometry(scale=(1,) * dropped + tuple(scale), dropped_axes=tuple(range(dropped)))


# ---------------------------------------------------------------------------------------------
# bioimage.io packages


def _load_package(path: Path, overrides: Sequence[str], device: torch.device) -> TrainedModel:
    # The description holds the package's zip open: it is read and let go in here.
    with bioimageio_calls():
        return _read_package(path, overrides, device)


def _read_package(path: Path, overrides: Sequence[str], device: torch.device) -> TrainedModel:
    from bioim2im.plugin.manager import get_registry
    from bioim2im.prediction.bioimageio_ops import Preprocessing, postprocessing_steps

    descr = _description(path)
    registry = get_registry()
    if len(descr.inputs) != 1:
        raise UserError(f"{path}: models with {len(descr.inputs)} inputs are not supported (one)")
    tensor = descr.inputs[0]
    layout = _input_layout(path, tensor)
    own = _own_config(descr)
    preset = None
    if own is not None:
        text = _read_file(descr, path, str(own.get("preset", "")))
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
            entry = own.get("outputs", {}).get(name, {})
            head_name = str(entry.get("head", name))
            if head_name not in preset.model.heads:
                raise UserError(
                    f"{path}: output {name!r} names head {head_name!r}, not in its preset"
                )
            head = preset.model.heads[head_name]
            remaining = head.postprocess[int(entry.get("expressed_steps", 0)) :]
            steps += [(s.name, registry.build("postprocessor", s)) for s in remaining]
            dtype = head.output_dtype
        heads[head_name] = _head(head_name, _channels(output), geometry, steps, dtype, registry)
        layout.outputs.append(order)
        names.append(head_name)
    network = _package_network(path, descr, layout, names, preset, device)
    settings = _settings(overrides, allowed=("predict", "data.axes")) if preset is None else {}
    if preset is None:
        preset = _bare_preset(settings, _default_window(layout, descr), layout.in_channels)
        preset = _overlap_for_halo(preset, layout, settings)
    digest = _digest(path)
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
    outputs: list[list[int]] = dataclasses.field(default_factory=list)
    """Per output, the permutation from its axis order to (B, C, *spatial)."""

    @property
    def axis_ids(self) -> tuple[str, ...]:
        return (self.channel_id, *self.space_ids)


def _description(path: Path) -> Any:
    try:
        from bioimageio.spec import InvalidDescr, load_model_description
        from bioimageio.spec.model.v0_5 import ModelDescr
    except ImportError:
        raise UserError(
            f"{path}: reading bioimage.io packages needs bioimageio.spec: pip install "
            "'bioim2im[bioimageio]'"
        ) from None
    source = path / next(n for n in RDF_NAMES if (path / n).is_file()) if path.is_dir() else path
    try:
        descr = load_model_description(source, perform_io_checks=False, format_version="latest")
    except Exception as exc:  # bioimageio.spec refuses what is not a model description
        raise UserError(f"{path} is not a readable bioimage.io model: {_first(exc)}") from None
    if isinstance(descr, InvalidDescr) or not isinstance(descr, ModelDescr):
        summary = getattr(descr, "validation_summary", None)
        errors = (
            [f"{d.name}: {e.msg}" for d in summary.details for e in d.errors] if summary else []
        )
        raise UserError(f"{path} is not a valid bioimage.io model (format 0.5):", errors[:10])
    return descr


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
    return _InputLayout(
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
) -> tuple[Any, tuple[str, ...], list[int]]:
    """The head geometry of ``output``, its axis ids as (channel, *kept spatial), and the
    permutation from its axis order to (B, C, *kept spatial)."""
    from bioim2im.prediction.blockwise import HeadGeometry

    kept, scale, order = [], [], []
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
    order = by_type["batch"] + by_type["channel"] + space_positions
    geometry = HeadGeometry(
        scale=(1,) * (dims - len(kept)) + tuple(scale), dropped_axes=tuple(range(dims - len(kept)))
    )
    ids = (channel_id, *[str(a.id) for a in output.axes if a.type == "space"])
    return geometry, ids, order


def _channels(output: Any) -> int:
    channels = [a for a in output.axes if a.type == "channel"]
    return len(channels[0].channel_names) if channels else 1


def _dtype(output: Any) -> str | None:
    dtype = str(output.dtype)
    return dtype if dtype in ("float32", "uint8", "uint16", "uint32", "float16") else None


def _operation(descr: Any) -> dict[str, Any]:
    return descr.model_dump(mode="json", exclude_none=True)


def _own_config(descr: Any) -> dict[str, Any] | None:
    extra = descr.config.model_extra or {}
    own = extra.get("bioim2im")
    return own if isinstance(own, dict) else None


def _read_file(descr: Any, path: Path, name: str) -> str | None:
    """An attachment's text, or None when the package has none of that name."""
    from bioimageio.spec.utils import download

    for attachment in descr.attachments:
        if str(attachment.source) == name:
            try:
                return download(attachment.source).read().decode("utf-8")
            except Exception as exc:  # a package missing its attachment
                raise UserError(
                    f"{path}: cannot read its attachment {name}: {_first(exc)}"
                ) from None
    return None


def _package_network(
    path: Path,
    descr: Any,
    layout: _InputLayout,
    heads: list[str],
    preset: Preset | None,
    device: torch.device,
) -> Any:
    """The package's network, called like bioim2im's: the first weights format available of
    the backend's choice (ONNX for ONNX Runtime; TorchScript, then bioim2im's state dict for
    torch)."""
    from bioimageio.spec.utils import download

    from bioim2im.model.conversion import as_tuple, load_torchscript
    from bioim2im.model.runtimes import OnnxRuntimeNetwork
    from bioim2im.prediction.backends import chosen_backend

    choice = preset.predict.backend if preset is not None else "auto"
    backend = chosen_backend(choice, device.type)
    weights = descr.weights
    order = ["onnx", "torchscript", "pytorch_state_dict"]
    if backend == "torch":
        order = ["torchscript", "pytorch_state_dict"] + (["onnx"] if choice == "auto" else [])
    elif choice == "onnxruntime":
        order = ["onnx"]
    available = [w for w in order if getattr(weights, w, None) is not None and _usable(w, weights)]
    if not available:
        raise UserError(
            f"{path}: no weights bioim2im can run with predict.backend = {choice!r} (it runs "
            "onnx, torchscript, and pytorch_state_dict weights of bioim2im's own architecture)"
        )
    chosen = available[0]
    data = download(getattr(weights, chosen).source).read()
    if chosen == "onnx":
        graph = OnnxRuntimeNetwork(data, None, device)

        def run(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(graph(batch).values())

    else:
        module = (
            load_torchscript(data, device)[0]
            if chosen == "torchscript"
            else _state_dict_network(path, weights.pytorch_state_dict, data, device)
        )

        def run(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return as_tuple(module(batch))

    return _Reordered(run, layout, heads)


def _usable(name: str, weights: Any) -> bool:
    if name != "pytorch_state_dict":
        return True
    architecture = weights.pytorch_state_dict.architecture
    return (
        getattr(architecture, "import_from", None) == "bioim2im.model.packaged"
        and str(architecture.callable) == "PackagedNetwork"
    )


def _state_dict_network(path: Path, weights: Any, data: bytes, device: torch.device) -> Any:
    import io

    import torch

    from bioim2im.model.packaged import PackagedNetwork

    kwargs = dict(weights.architecture.kwargs)
    network = PackagedNetwork(kwargs.get("patch_size", []), kwargs.get("model", {}))
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:  # a state dict that does not fit its architecture
        raise UserError(
            f"{path}: its pytorch_state_dict weights do not load: {_first(exc)}"
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
        outputs = self.run(tensor.permute(*self.permutation).contiguous())
        if len(outputs) != len(self.heads):
            raise ValueError(
                f"the network returned {len(outputs)} outputs, its package {len(self.heads)}"
            )
        result = {}
        for index, head in enumerate(self.heads):
            output = outputs[index].permute(*self.layout.outputs[index])
            if not self.has_batch:
                output = output.unsqueeze(0)
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


def _digest(path: Path) -> Any:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if path.suffix.lower() in (".yaml", ".yml"):
        files = sorted(p for p in path.parent.rglob("*") if p.is_file())
    for file in files:
        with open(file, "rb") as handle:
            while piece := handle.read(1 << 20):
                digest.update(piece)
    return digest


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
