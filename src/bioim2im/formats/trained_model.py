"""The trained model behind ``bioim2im predict``: a checkpoint read back into its network, its
preset and, per head, what prediction writes (geometry, postprocessing, channels, dtype).

A head's postprocessing chain is split where it stops being *pointwise*: sigmoid, softmax,
argmax and threshold look at one voxel at a time and run on each block as it is predicted; the
steps from the first other one on (connected components, watershed, size filters, hole filling)
need a voxel's neighbours and run after prediction on blocks with a halo; when they number
objects (connected components, watershed), the ids are stitched across blocks. Each
postprocessor says which it is when it is registered (extras ``pointwise`` and ``labels``, see
:mod:`bioim2im.plugin.hookspecs`), the built-in ones too.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bioim2im.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    import torch

    from bioim2im.config.schema import HeadConfig, Preset
    from bioim2im.data.volumes import HeadTarget
    from bioim2im.plugin.registry import ComponentRegistry
    from bioim2im.prediction.blockwise import HeadGeometry

Step = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class HeadOutput:
    """What prediction writes for one head."""

    name: str
    out_channels: int
    """Channels the network outputs."""
    geometry: HeadGeometry
    pointwise: tuple[Step, ...]
    neighbourhood: tuple[Step, ...]
    instance: bool
    """The neighbourhood steps number objects, whose ids are stitched across blocks (otherwise
    they keep values, e.g. filling the holes of a mask, and blocks are just cut out)."""
    blockwise_channels: int
    blockwise_dtype: np.dtype
    """Channels and dtype after the pointwise steps (what blocks hold before the others)."""
    channels: int
    dtype: np.dtype
    """Channels and dtype written."""
    is_label: bool
    scaled: bool
    """Floating-point values in [0, 1] written as integers spanning the dtype (x 255 for uint8)."""

    def run_pointwise(self, values: np.ndarray) -> np.ndarray:
        return _run(self.pointwise, values)

    def run_neighbourhood(self, values: np.ndarray) -> np.ndarray:
        return _run(self.neighbourhood, values)

    def to_output(self, values: np.ndarray) -> np.ndarray:
        """Postprocessed ``values`` in the written dtype."""
        if self.scaled:
            top = np.iinfo(self.dtype).max
            return np.rint(np.clip(values, 0.0, 1.0) * top).astype(self.dtype)
        if self.dtype.kind in "ui" and values.size:
            top = int(values.max())
            if top > np.iinfo(self.dtype).max:
                raise UserError(
                    f"head '{self.name}': value {top} does not fit output_dtype {self.dtype}; "
                    f"set model.heads.{self.name}.output_dtype to a larger type"
                )
        return values.astype(self.dtype, copy=False)


@dataclass
class TrainedModel:
    """A checkpoint's network (in eval mode, on ``device``), preset and heads."""

    checkpoint: Path
    preset: Preset
    registry: ComponentRegistry
    network: Any
    """A torch module in eval mode, or a converted graph called like one (batch -> dict)."""
    heads: dict[str, HeadOutput]
    device: torch.device
    amp_dtype: torch.dtype | None
    fingerprint: str
    """Identifies the weights and every setting that decides the predictions."""

    @property
    def spatial_dims(self) -> int:
        return self.preset.spatial_dims

    @property
    def in_channels(self) -> int:
        return self.preset.model.in_channels

    @property
    def roi_size(self) -> tuple[int, ...]:
        """``predict.roi_size``, by default the training patch size."""
        return tuple(self.preset.predict.roi_size or self.preset.data.patch_size)

    def window(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The sliding window for an image of ``spatial_shape``: :attr:`roi_size`, but no larger
        than the image rounded up to a size the network takes (a larger window would only pad
        the image, at any memory cost), nor smaller than the training patch. A network with one
        fixed input size keeps it."""
        component = self.registry.get("backbone", self.preset.model.backbone.name)
        if "input_size" in component.extras:
            return self.roi_size
        divisor_of = component.extras.get("divisor")
        divisor = int(divisor_of(self.preset.model.backbone.params())) if divisor_of else 1
        # Never below the training patch, though: the network is known to work on that size
        # (a 2-pixel window can leave a normalisation layer a single voxel).
        patch = self.preset.data.patch_size
        return tuple(
            max(min(roi, -(-n // divisor) * divisor), min(roi, p))
            for roi, n, p in zip(self.roi_size, spatial_shape, patch, strict=True)
        )

    @property
    def dropped_axes(self) -> tuple[int, ...]:
        """Spatial axes some head projects away (blocks span them whole)."""
        return tuple(sorted({a for h in self.heads.values() for a in h.geometry.dropped_axes}))

    def input_normalization(self) -> tuple[Any, Any]:
        """How input images are normalised (``data.normalize``) and the NaN policy."""
        from bioim2im.data.preparation import preparation

        prep = preparation(self.preset, self.registry)
        return prep.normalize, prep.nan_policy


def load_model(
    run_or_checkpoint: str | Path,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    *,
    trust_model: bool = False,
) -> TrainedModel:
    """Read a run directory's best checkpoint (or a checkpoint file) for prediction.

    ``overrides`` (``KEY.PATH=VALUE``, e.g. ``predict.tta=true``) change the checkpoint's preset
    before it is validated. Checkpoint problems raise a UserError naming the file. A bioimage.io
    package, an ONNX or a TorchScript file is read by :mod:`bioim2im.prediction.model_files`
    (from an ``http(s)://`` URL too: :mod:`bioim2im.prediction.model_urls`); a TorchScript
    graph from such a file runs only when it holds tensor operations alone, unless
    ``trust_model``. The network runs with the backend ``predict.backend`` chooses.
    """
    from bioim2im.prediction import model_files, model_urls
    from bioim2im.prediction.backends import use_backend

    if model_urls.is_url(run_or_checkpoint):
        return model_urls.load_model_url(
            str(run_or_checkpoint), overrides, device, trust_model=trust_model
        )
    if model_files.is_model_file(run_or_checkpoint):
        return model_files.load_model_file(
            Path(run_or_checkpoint), overrides, device, trust_model=trust_model
        )
    return use_backend(load_checkpoint_model(run_or_checkpoint, overrides, device))


def load_checkpoint_model(
    run_or_checkpoint: str | Path,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> TrainedModel:
    """:func:`load_model` of a run directory or a checkpoint, its network a torch module."""
    import torch

    from bioim2im.config.loading import apply_override, to_toml, validate
    from bioim2im.model.checkpoint import checkpoint_path, load_checkpoint
    from bioim2im.model.network import amp_dtype, build_model
    from bioim2im.plugin.manager import get_registry

    path = checkpoint_path(run_or_checkpoint)
    state = load_checkpoint(path)
    if not isinstance(state.get("model"), Mapping) or not isinstance(state.get("preset"), str):
        raise UserError(f"{path}: the checkpoint lacks its model weights or its preset")
    registry = get_registry()
    try:
        data = tomllib.loads(state["preset"])
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: the checkpoint's preset is not valid TOML: {exc}") from None
    except RecursionError:
        raise UserError(f"{path}: the checkpoint's preset nests tables too deeply") from None
    for text in overrides:
        data = apply_override(data, text)
    preset = validate(data, registry, f"the preset of checkpoint {path}")
    network = build_model(preset, registry)
    try:
        network.load_state_dict(_prediction_weights(state))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(
            f"{path}: the weights do not fit the network its preset describes"
            f"{' (changed by --set?)' if overrides else ''}: {first}"
        ) from None
    device = torch.device(device)
    network.to(device).eval()
    heads = head_outputs(preset, registry)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    digest.update(to_toml(preset).encode())
    return TrainedModel(
        checkpoint=path,
        preset=preset,
        registry=registry,
        network=network,
        heads=heads,
        device=device,
        amp_dtype=amp_dtype(preset.train.amp, device),
        fingerprint=digest.hexdigest(),
    )


def head_outputs(preset: Preset, registry: ComponentRegistry) -> dict[str, HeadOutput]:
    """Per head of ``preset``, what prediction writes, with the output geometry training used
    (the axes each head drops, its upsampling factors)."""
    from bioim2im.data.preparation import preparation

    targets = {target.head: target for target in preparation(preset, registry).heads}
    return {
        name: _head_output(name, head, targets[name], preset.spatial_dims, registry)
        for name, head in preset.model.heads.items()
    }


def _prediction_weights(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The averaged weights when the run kept an EMA (they are what validation scored), else the
    trained ones."""
    ema = state.get("ema")
    if isinstance(ema, Mapping):
        prefix = "module."
        averaged = {k[len(prefix) :]: v for k, v in ema.items() if k.startswith(prefix)}
        if averaged:
            return averaged
    return state["model"]


def _head_output(
    name: str, head: HeadConfig, target: HeadTarget, dims: int, registry: ComponentRegistry
) -> HeadOutput:
    from bioim2im.prediction.blockwise import HeadGeometry

    scales = iter(target.scale)
    geometry = HeadGeometry(
        scale=tuple(1 if a in target.dropped_axes else next(scales) for a in range(dims)),
        dropped_axes=target.dropped_axes,
    )
    steps = [(spec.name, registry.build("postprocessor", spec)) for spec in head.postprocess]
    return chain_output(name, head.out_channels, geometry, steps, head.output_dtype, registry)


def chain_output(
    name: str,
    channels: int,
    geometry: HeadGeometry,
    steps: Sequence[tuple[str | None, Step]],
    output_dtype: str | None,
    registry: ComponentRegistry,
) -> HeadOutput:
    """What prediction writes for a head whose steps are ``(registered postprocessor name, or
    None for a model package's own pointwise operation; the built step)``: the chain is split
    at the first step not declared pointwise, and numbers objects when a later step does."""

    def declared(step: str | None, extra: str) -> bool:
        if step is None:
            return extra == "pointwise"
        return bool(registry.get("postprocessor", step).extras.get(extra, False))

    split = 0
    while split < len(steps) and declared(steps[split][0], "pointwise"):
        split += 1
    return head_output(
        name,
        channels,
        geometry,
        pointwise=tuple(step for _, step in steps[:split]),
        neighbourhood=tuple(step for _, step in steps[split:]),
        instance=any(declared(n, "labels") for n, _ in steps[split:]),
        output_dtype=output_dtype,
    )


def head_output(
    name: str,
    out_channels: int,
    geometry: HeadGeometry,
    *,
    pointwise: tuple[Step, ...],
    neighbourhood: tuple[Step, ...],
    instance: bool,
    output_dtype: str | None,
) -> HeadOutput:
    """What prediction writes for a head whose raw output has ``out_channels`` and goes through
    ``pointwise`` then ``neighbourhood`` steps (``instance``: they number objects)."""
    # What the chain makes of a block: run it on a small one.
    probe = np.zeros((out_channels, *[8] * len(geometry.kept_axes)), np.float32)
    blockwise = _run(pointwise, probe)
    final = _run(neighbourhood, blockwise)
    integer = final.dtype.kind in "uib"
    wanted = output_dtype or ("uint32" if integer else "float32")
    dtype = np.dtype(wanted)
    return HeadOutput(
        name=name,
        out_channels=out_channels,
        geometry=geometry,
        pointwise=pointwise,
        neighbourhood=neighbourhood,
        instance=instance,
        blockwise_channels=blockwise.shape[0],
        blockwise_dtype=np.dtype(np.float32 if blockwise.dtype.kind == "f" else blockwise.dtype),
        channels=final.shape[0],
        dtype=dtype,
        is_label=integer and dtype.kind in "ui",
        scaled=not integer and dtype.kind in "ui",
    )


def _run(steps: Sequence[Step], values: np.ndarray) -> np.ndarray:
    for step in steps:
        values = np.asarray(step(values))
    return values
