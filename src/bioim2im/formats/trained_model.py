"""The trained model prediction runs, whatever its format: a network called like bioim2im's
(a batch in, a dict of head outputs), a preset and, per head, what prediction writes (geometry,
postprocessing, channels, dtype). :func:`bioim2im.formats.load_model` reads one from any format.

A head's postprocessing chain is split where it stops being *pointwise*: sigmoid, softmax,
argmax and threshold look at one voxel at a time and run on each block as it is predicted; the
steps from the first other one on (connected components, watershed, size filters, hole filling)
need a voxel's neighbours and run after prediction on blocks with a halo; when they number
objects (connected components, watershed), the ids are stitched across blocks. Each
postprocessor says which it is when it is registered (extras ``pointwise`` and ``labels``, see
:mod:`bioim2im.plugin.hookspecs`), the built-in ones too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bioim2im.config.build import divisors
from bioim2im.errors import UserError

if TYPE_CHECKING:
    import torch

    from bioim2im.config.schema import HeadConfig, Preset
    from bioim2im.data.volumes import HeadTarget
    from bioim2im.io.images import InputImage
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
        return run_steps(self.pointwise, values)

    def run_neighbourhood(self, values: np.ndarray) -> np.ndarray:
        return run_steps(self.neighbourhood, values)

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
    """A model's network (in eval mode, on ``device``), preset and heads."""

    checkpoint: Path
    """The file (or package) it was read from."""
    preset: Preset
    registry: ComponentRegistry
    network: Any
    """A torch module in eval mode, or a converted graph called like one (batch -> dict)."""
    heads: dict[str, HeadOutput]
    device: torch.device
    amp_dtype: torch.dtype | None
    fingerprint: str
    """Identifies the weights and every setting that decides the predictions."""
    _measured: dict[str, tuple[int, ...] | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

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
        divisor = self.divisor()
        # Never below the training patch, though: the network is known to work on that size
        # (a 2-pixel window can leave a normalisation layer a single voxel).
        patch = self.preset.data.patch_size
        return tuple(
            max(min(roi, -(-n // d) * d), min(roi, p))
            for roi, n, p, d in zip(self.roi_size, spatial_shape, patch, divisor, strict=True)
        )

    def divisor(self) -> tuple[int, ...]:
        """Per spatial axis, what the network's input sizes are multiples of."""
        return divisors(self.registry, self.preset.model.backbone, self.preset.spatial_dims)

    @property
    def fixed_size(self) -> bool:
        """The network takes one input size."""
        component = self.registry.get("backbone", self.preset.model.backbone.name)
        return "input_size" in component.extras

    def halo(self) -> tuple[int, ...] | None:
        """``predict.halo`` resolved: the voxels dropped at each end of a window per spatial
        axis (see :func:`bioim2im.model.receptive.window_halo` for "auto"), or None: blended
        windows. Measured once per model."""
        wanted = self.preset.predict.halo
        if wanted is None:
            return None
        if wanted != "auto":
            if len(wanted) != self.spatial_dims:
                raise UserError(
                    f"predict.halo {list(wanted)}: give one value per spatial axis "
                    f'({self.spatial_dims}), or "auto"'
                )
            return tuple(int(h) for h in wanted)
        return self.measured_halo()

    def measured_halo(self) -> tuple[int, ...] | None:
        """The halo beyond which the network's output does not depend on the window (a
        multiple of its divisor), or None: it depends on the whole window (e.g. instance
        normalisation), or it is not a torch network. Measured once
        (:func:`bioim2im.model.receptive.halo_of`)."""
        if "auto" not in self._measured:
            from bioim2im.model.receptive import halo_of

            heads = {name: head.geometry for name, head in self.heads.items()}
            self._measured["auto"] = halo_of(
                self.network,
                in_channels=self.in_channels,
                spatial_dims=self.spatial_dims,
                divisor=max(self.divisor()),
                scales={n: tuple(g.scale) for n, g in heads.items()},
                dropped={n: tuple(g.dropped_axes) for n, g in heads.items()},
                fixed_size=self.fixed_size,
            )
        return self._measured["auto"]

    def halo_tiling(
        self, spatial_shape: Sequence[int]
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
        """For halo tiling (:meth:`halo`), per spatial axis: the halo, the window
        (:meth:`window` of the image mirrored by the halo, with an interior of at least a
        divisor, in a size the network takes) and the step the windows start on; None for
        blended windows.

        A measured halo (``"auto"``: a window-independent network) is rounded up to the
        network's divisor and windows start on multiples of it, so that every voxel gets its
        whole-image value. A halo given as a list is kept and windows start where
        bioimageio.core's blocks do (step 1), as a package of a window-dependent network is
        predicted (:meth:`_halo_step`)."""
        halo = self.halo()
        if halo is None:
            return None
        divisor = self.divisor()
        step = self._halo_step()
        halo = tuple(-(-h // s) * s for h, s in zip(halo, step, strict=True))
        padded = [n + 2 * h for n, h in zip(spatial_shape, halo, strict=True)]
        window = tuple(
            self._size_at_least(axis, max(w, 2 * h + d))
            for axis, (w, h, d) in enumerate(zip(self.window(padded), halo, divisor, strict=True))
        )
        return halo, window, step

    def _halo_step(self) -> tuple[int, ...]:
        """What halo tiling's windows start on multiples of (see :meth:`halo_tiling`)."""
        if self.preset.predict.halo == "auto":
            return self.divisor()
        return (1,) * self.spatial_dims

    def _size_at_least(self, axis: int, wanted: int) -> int:
        """The smallest input size the network takes along ``axis`` from ``wanted`` on."""
        divisor = self.divisor()[axis]
        return -(-wanted // divisor) * divisor

    @property
    def dropped_axes(self) -> tuple[int, ...]:
        """Spatial axes some head projects away (blocks span them whole)."""
        return tuple(sorted({a for h in self.heads.values() for a in h.geometry.dropped_axes}))

    def input_normalization(self) -> tuple[Any, Any]:
        """How input images are normalised (``data.normalize``) and the NaN policy."""
        from bioim2im.data.preparation import preparation

        prep = preparation(self.preset, self.registry)
        return prep.normalize, prep.nan_policy


@dataclass
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

    def divisor(self) -> tuple[int, ...]:
        if self.sizes is None:
            return (1,) * self.spatial_dims
        return tuple(1 if isinstance(size, int) else size[1] for size in self.sizes)

    def _halo_step(self) -> tuple[int, ...]:
        # A package's halo: a window-independent network's sizes step by its divisor (whole-
        # image values); one input size (a window-dependent network) gives 1, core's blocks.
        return self.divisor()

    @property
    def fixed_size(self) -> bool:
        return self.sizes is not None and any(isinstance(size, int) for size in self.sizes)

    def _size_at_least(self, axis: int, wanted: int) -> int:
        if self.sizes is None:
            return wanted
        size = self.sizes[axis]
        if isinstance(size, int):
            return size
        low, step = size
        return low + max(0, math.ceil((wanted - low) / step)) * step

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


def mismatch(found: InputImage, model: TrainedModel) -> str | None:
    """Why the model cannot predict ``found``, or None."""
    image = found.image
    if "S" in image.axes:
        return (
            f"{found.path}: axes {image.axes} have an S (sample) axis; "
            "write each sample as its own image to predict it"
        )
    dims, channels = model.spatial_dims, model.in_channels
    if len(found.spatial) != dims or found.channels != channels:
        expected = "ZYX" if dims == 3 else "YX"
        return (
            f"{found.path}: shape {tuple(image.shape)} with axes {image.axes} has "
            f"{found.channels} channel(s) and {len(found.spatial)} spatial axes "
            f"({found.spatial}), but the model expects {channels} channel(s) and {dims} "
            f"spatial axes ({expected})"
        )
    problem = _too_many_windows(found, model)
    if problem is not None:
        return problem
    data = model.preset.data
    if data.target_voxel_size is not None:
        # Training resampled every image to this voxel size; prediction does not resample.
        size = found.voxel_size or (tuple(data.voxel_size) if data.voxel_size else None)
        if size is None or not np.allclose(size, data.target_voxel_size, rtol=1e-3):
            return (
                f"{found.path}: voxel size {size or 'unknown'}, but the model was trained on "
                f"images resampled to {tuple(data.target_voxel_size)}; resample it to that "
                "voxel size first"
            )
    return None


MAX_WINDOWS = 1 << 40
"""The most windows prediction takes on for one image: about 10^12, a year or more of any
machine's time. More means a damaged header (2^31 x 2^31 pixels, say), not an image."""
MAX_AXIS_WINDOWS = 1 << 24
"""The most windows along one axis (their positions are planned up front)."""


def _too_many_windows(found: InputImage, model: TrainedModel) -> str | None:
    shape = found.spatial_shape
    window = model.window(shape)
    overlap = model.preset.predict.overlap
    overlaps = overlap if isinstance(overlap, list) else [overlap] * len(shape)
    along = [
        math.ceil(max(n - w, 0) / max(w * (1.0 - o), 1.0)) + 1
        for n, w, o in zip(shape, window, overlaps, strict=True)
    ]
    total = math.prod(along) * found.time_points
    if max(along) <= MAX_AXIS_WINDOWS and total <= MAX_WINDOWS:
        return None
    return (
        f"{found.path}: {' x '.join(map(str, found.image.shape))} pixels ({found.image.axes}) "
        f"need {total:.3g} windows of {list(window)} to predict, more than prediction can get "
        f"through (at most {MAX_WINDOWS:.3g}, and {MAX_AXIS_WINDOWS:,} along an axis): is its "
        "header damaged? Predict a crop of it"
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


def _head_output(
    name: str, head: HeadConfig, target: HeadTarget, dims: int, registry: ComponentRegistry
) -> HeadOutput:
    from bioim2im.prediction.blockwise import HeadGeometry

    scales = iter(target.scale)
    geometry = HeadGeometry(
        scale=tuple(1 if a in target.dropped_axes else next(scales) for a in range(dims)),
        dropped_axes=target.dropped_axes,
        directions=directions(head, dims, registry),
    )
    steps = [(spec.name, registry.build("postprocessor", spec)) for spec in head.postprocess]
    return chain_output(name, head.out_channels, geometry, steps, head.output_dtype, registry)


def directions(
    head: HeadConfig, dims: int, registry: ComponentRegistry
) -> tuple[tuple[int, int], ...]:
    """The ``(channel, spatial axis)`` pairs of the head's vector components, as its head and
    its loss declare them (the ``directions`` extra): test-time augmentation negates them along
    the axes it flips."""
    found: dict[int, int] = {}
    for kind, name in (("loss", head.loss.name), ("head", head.name)):
        declared = registry.get(kind, name).extras.get("directions")
        if declared is not None:
            found.update(declared(dims))
    return tuple(sorted((int(c), int(a)) for c, a in found.items()))


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
    blockwise = run_steps(pointwise, probe)
    final = run_steps(neighbourhood, blockwise)
    integer = final.dtype.kind in "uib"
    if output_dtype is not None:
        wanted = output_dtype
    elif not integer:
        wanted = "float32"
    elif instance or out_channels > 256:
        wanted = "uint32"  # object ids
    else:
        wanted = "uint8"  # a mask (0/1 per channel) or a class map (0 .. channels - 1)
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


def run_steps(steps: Sequence[Step], values: np.ndarray) -> np.ndarray:
    """``values`` through each step in turn."""
    for step in steps:
        values = np.asarray(step(values))
    return values
