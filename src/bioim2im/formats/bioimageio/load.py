"""bioimage.io packages read for prediction (a zip, a folder or its ``rdf.yaml``; model format
0.5, older ones converted by bioimageio.spec), offline.

Its input is normalised with the package's own preprocessing (statistics once per image, see
:mod:`bioim2im.formats.bioimageio.operations`), its outputs go through the package's
postprocessing, and the windows are sizes the package allows. Weights: ONNX (ONNX Runtime),
TorchScript, or ``pytorch_state_dict`` when its architecture is bioim2im's own
(:class:`~bioim2im.model.packaged.PackagedNetwork`; no other code named by a package is ever
imported). A package bioim2im exported also names its heads and attaches its preset: the steps
bioimage.io cannot express (watershed, size filters) then run too, with the run's windows and
output types, so its predictions equal the run's. The package's files are read through
:class:`~bioim2im.formats.bioimageio.package.PackageFiles`: its own, within bounds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.errors import UserError, first_line
from bioim2im.formats.bioimageio.calls import bioimageio_calls
from bioim2im.formats.bioimageio.package import PackageFiles
from bioim2im.formats.graphs.load import read_torchscript
from bioim2im.formats.settings import bare_preset, model_settings, preset_from_text, table
from bioim2im.formats.trained_model import PackagedModel, TrainedModel, chain_output, directions

if TYPE_CHECKING:
    import torch

    from bioim2im.config.schema import Preset
    from bioim2im.formats.trained_model import HeadOutput

SPATIAL = "zyx"
WINDOW = {2: 256, 3: 128}
"""Default window edge for a package that does not say (the largest size it takes up to this)."""


def load_package(
    path: Path, overrides: Sequence[str], device: torch.device, trust_model: bool
) -> TrainedModel:
    """The model in the package ``path`` (a zip, a folder or its description)."""
    # Everything the package holds is read in here, and its zip let go.
    with bioimageio_calls(), PackageFiles(path) as files:
        return _read_package(files, overrides, device, trust_model)


def _read_package(
    files: PackageFiles, overrides: Sequence[str], device: torch.device, trust_model: bool
) -> TrainedModel:
    from bioim2im.formats.bioimageio.operations import Preprocessing, postprocessing_steps
    from bioim2im.plugin.manager import get_registry

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
            preset = preset_from_text(text, overrides, registry, f"the preset attached to {path}")
            preset = _with_halo(preset, own["halo"], overrides)
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
            # The vector components of the head that made it (negated by flipping TTA).
            geometry = dataclasses.replace(
                geometry, directions=directions(head, len(geometry.scale), registry)
            )
        heads[head_name] = chain_output(
            head_name, _channels(output), geometry, steps, dtype, registry
        )
        layout.outputs.append(order)
        layout.output_channels.append(_channels(output))
        names.append(head_name)
    network = _package_network(files, descr, layout, names, overrides, device, trust_model, own)
    settings = model_settings(overrides, allowed=("predict", "data.axes")) if preset is None else {}
    if preset is None:
        if layout.one_window_at_a_time:
            predict = table(settings.get("predict", {}), "predict")
            settings["predict"] = {"batch_size": 1, **predict}
        preset = bare_preset(settings, _default_window(layout, descr), layout.in_channels)
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
    halo = own.get("halo")
    if halo is not None and (
        not isinstance(halo, list)
        or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in halo)
    ):
        raise UserError(f"{where}.halo must be a list of voxel counts >= 0, got {_short(halo)}")
    # The network's [model] section (PackagedNetwork's keyword arguments), checked when built.
    return {"preset": preset, "outputs": checked, "network": own.get("network"), "halo": halo}


def _with_halo(preset: Preset, halo: list[int] | None, overrides: Sequence[str]) -> Preset:
    """The attached preset predicting with the package's halo (its network is
    window-independent), unless ``--set predict.halo`` chose."""
    if halo is None or any(o.split("=", 1)[0].strip() == "predict.halo" for o in overrides):
        return preset
    if len(halo) != preset.spatial_dims:
        return preset
    predict = preset.predict.model_copy(update={"halo": list(halo)})
    return preset.model_copy(update={"predict": predict})


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _read_file(files: PackageFiles, descr: Any, name: str) -> str | None:
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
    from bioim2im.formats.backends import BACKENDS

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
    files: PackageFiles,
    descr: Any,
    layout: _InputLayout,
    heads: list[str],
    overrides: Sequence[str],
    device: torch.device,
    trust_model: bool,
    own: dict[str, Any] | None = None,
) -> Any:
    """The package's network, called like bioim2im's: the first of its weights formats in
    :func:`weights_order`."""
    from bioim2im.formats.graphs.conversion import as_tuple
    from bioim2im.formats.graphs.runtimes import OnnxRuntimeNetwork

    path = files.path
    choice = _backend_choice(overrides)
    weights = descr.weights
    order = weights_order(choice, device)
    available = [
        w for w in order if getattr(weights, w, None) is not None and _usable(w, weights, own)
    ]
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
            read_torchscript(data, device, trust_model, label)[0]
            if chosen == "torchscript"
            else _state_dict_network(label, *_architecture(path, label, entry, own), data, device)
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


def _usable(name: str, weights: Any, own: dict[str, Any] | None = None) -> bool:
    """Whether bioim2im runs these weights: any ONNX or TorchScript; a state dict whose
    architecture is bioim2im's own, named (``PackagedNetwork``) or as the file bioim2im
    attaches (recognised by its sha256, never run: the network is built from the package's
    ``config.bioim2im.network``)."""
    if name != "pytorch_state_dict":
        return True
    architecture = weights.pytorch_state_dict.architecture
    if (
        getattr(architecture, "import_from", None) == "bioim2im.model.packaged"
        and str(architecture.callable) == "PackagedNetwork"
    ):
        return True
    return _own_file(architecture) and own is not None and own.get("network") is not None


def _own_file(architecture: Any) -> bool:
    from bioim2im.formats.bioimageio.standalone_network_file import is_own

    declared = getattr(architecture, "sha256", None)
    return declared is not None and is_own(str(declared))


def _architecture(
    path: Path, label: str, weights: Any, own: dict[str, Any] | None
) -> tuple[dict[str, Any], str]:
    """PackagedNetwork's keyword arguments for a state dict bioim2im runs (see :func:`_usable`),
    and where the package gives them."""
    architecture = weights.architecture
    if getattr(architecture, "import_from", None) is not None or own is None:
        return dict(architecture.kwargs), f"{label}: its architecture's kwargs"
    network = own.get("network")
    where = f"{path}: config.bioim2im.network"
    if not isinstance(network, dict):
        raise UserError(f"{where} must be a table (patch_size and model), got {_short(network)}")
    return network, where


def _state_dict_network(
    label: str, kwargs: dict[str, Any], where: str, data: bytes, device: torch.device
) -> Any:
    import io

    import torch

    from bioim2im.model.packaged import PackagedNetwork

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
        raise UserError(f"{where}: the network cannot be built: {first_line(exc)}") from None
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
            f"{label}: its pytorch_state_dict weights do not fit its architecture: "
            f"{first_line(exc)}"
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
                f"says ({tuple(shaped.shape)}): {first_line(exc)}"
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


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate" in text
