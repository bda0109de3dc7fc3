"""How a bioim2im model looks as a bioimage.io model: its tensors, their axes and sizes, and its
pre- and postprocessing in the specification's own operations.

- Input ``input``: axes batch, channel, (z,) y, x. For a window-independent network (batch
  normalisation or none) each spatial size is ``min + n * step``, ``step`` the network's
  divisor and ``min`` the smallest size that keeps something once the halo is dropped. A
  network whose output depends on the whole window (instance normalisation, the presets'
  default) takes one size, bioim2im's prediction window, as does a network that only takes one
  size (UNETR): then every consumer's tiles are bioim2im's windows.
- One output per head, named after it: axes batch, channel, the spatial axes the head keeps,
  each sized from the input's (``scale`` 1/upsampling for an upsampling head) with a ``halo``,
  the border a tiling consumer drops: for a window-independent network its receptive field,
  rounded up to the divisor; otherwise half the overlap of bioim2im's windows. Either way
  bioimageio.core's blockwise prediction equals ``bioim2im predict``'s of the package, which
  tiles with that halo (``config.bioim2im.halo``, ``predict.halo``).
- Preprocessing: ``data.normalize`` as the operations its component declares (the
  ``bioimageio`` registration extra; the built-ins: ``scale_range`` for percentile and minmax,
  ``zero_mean_unit_variance`` for zscore, ``scale_linear`` for fixed_range), per channel.
- Postprocessing: the head's steps, as their components declare them, up to the first one
  without a declaration (built-ins: sigmoid, softmax, threshold -> binarize); the others
  (argmax, watershed, connected components, size filters, hole filling) are described in the
  README and stay in the attached preset, from which ``bioim2im predict`` runs them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bioim2im.errors import UserError
from bioim2im.formats.export.source import Source

if TYPE_CHECKING:
    from bioim2im.plugin.registry import ComponentRegistry

SPACE = ("z", "y", "x")
INPUT = "input"


@dataclass
class OutputLayout:
    head: str
    tensor: str
    channels: int
    kept_axes: tuple[int, ...]
    """The input's spatial axes this output has."""
    scale: tuple[int, ...]
    """Output voxels per input voxel along each kept axis."""
    halo: tuple[int, ...]
    """Output voxels to drop at each border, per kept axis."""
    operations: list[dict[str, Any]]
    expressed: int
    """How many of the head's postprocessing steps ``operations`` express."""
    remaining: list[str] = field(default_factory=list)
    """The other steps, as ``name(param=value, ...)``."""
    binary: bool = False
    spatial_ids: tuple[str, ...] = ()
    """Ids of the kept axes."""

    @property
    def axis_ids(self) -> tuple[str, ...]:
        return ("channel", *self.spatial_ids)

    @property
    def dtype(self) -> str:
        return "uint8" if self.binary else "float32"


@dataclass
class Layout:
    input: str
    spatial_ids: tuple[str, ...]
    in_channels: int
    sizes: list[tuple[int, int] | int]
    """Per spatial axis: (min, step), or the one size the network takes."""
    preprocessing: list[dict[str, Any]]
    outputs: list[OutputLayout]
    window_independent: bool = False
    """The network's output does not depend on the window beyond the outputs' halo (the
    input's halo is its receptive field): bioim2im predicts the package with that halo."""

    @property
    def input_axis_ids(self) -> tuple[str, ...]:
        return ("channel", *self.spatial_ids)

    def valid_size(self, axis: int, wanted: int) -> int:
        """The largest size this axis takes not above ``wanted`` (at least its minimum)."""
        size = self.sizes[axis]
        if isinstance(size, int):
            return size
        low, step = size
        return low + max(0, (wanted - low) // step) * step


def plan_layout(source: Source) -> Layout:
    model, preset = source.model, source.model.preset
    dims = source.spatial_dims
    spatial_ids = SPACE[-dims:]
    overlap = preset.predict.overlap
    overlaps = list(overlap) if isinstance(overlap, list) else [overlap] * dims
    window = model.roi_size
    fixed, divisor = source.fixed_size, source.divisor
    # A window-independent network: its receptive field, so that a consumer tiling with this
    # halo (bioimageio.core's blockwise prediction) gives what bioim2im's halo tiling gives.
    # Otherwise half the overlap of bioim2im's blended windows, where their seams would be.
    measured = None if fixed is not None else model.measured_halo()
    if measured is not None:
        input_halo = [-(-h // d) * d for h, d in zip(measured, divisor, strict=True)]
    else:
        input_halo = [int(o * w) // 2 for o, w in zip(overlaps, window, strict=True)]
    sizes: list[tuple[int, int] | int] = []
    for a in range(dims):
        if fixed is not None:
            sizes.append(fixed[a])
        elif measured is None:
            # Core's blocks are then bioim2im's windows, and its prediction bioim2im's.
            sizes.append(window[a])
        else:
            # The smallest multiple of the divisor that keeps voxels once both halos are dropped.
            step = divisor[a]
            sizes.append((step * (2 * input_halo[a] // step + 1), step))
    names = _tensor_names(source.heads)
    outputs = []
    for head in source.heads:
        output = model.heads[head]
        geometry = output.geometry
        operations, expressed, binary = _postprocessing(
            preset.model.heads[head].postprocess, spatial_ids, model.registry
        )
        remaining = [_describe(spec) for spec in preset.model.heads[head].postprocess[expressed:]]
        outputs.append(
            OutputLayout(
                head=head,
                tensor=names[head],
                channels=output.out_channels,
                kept_axes=tuple(geometry.kept_axes),
                scale=tuple(geometry.scale[a] for a in geometry.kept_axes),
                halo=tuple(input_halo[a] * geometry.scale[a] for a in geometry.kept_axes),
                operations=operations,
                expressed=expressed,
                remaining=remaining,
                binary=binary,
                spatial_ids=tuple(spatial_ids[a] for a in geometry.kept_axes),
            )
        )
    return Layout(
        window_independent=measured is not None,
        input=INPUT if INPUT not in names.values() else "raw",
        spatial_ids=spatial_ids,
        in_channels=model.in_channels,
        sizes=sizes,
        preprocessing=preprocessing(preset.data.normalize, spatial_ids, model.registry),
        outputs=outputs,
    )


def _tensor_names(heads: list[str]) -> dict[str, str]:
    """Tensor ids (lower-case identifiers) for the heads."""
    names: dict[str, str] = {}
    for index, head in enumerate(heads):
        name = re.sub(r"[^a-z0-9_]", "_", head.lower())[:32]
        if not name or not name[0].isalpha() or name in names.values():
            name = f"output{index}"
        names[head] = name
    return names


def preprocessing(
    normalize: Any, spatial_ids: tuple[str, ...], registry: ComponentRegistry
) -> list[dict[str, Any]]:
    """``data.normalize`` as the specification's operations (per channel), from what its
    component declares (the ``bioimageio`` extra)."""
    operations = _declared(registry, "transform", normalize, spatial_ids)
    if operations is None:
        raise UserError(
            f"data.normalize '{normalize.name}' has no bioimage.io equivalent (its component "
            "declares none); export the network with --format onnx or torchscript"
        )
    return [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}, *operations]


def _postprocessing(
    specs: list[Any], spatial_ids: tuple[str, ...], registry: ComponentRegistry
) -> tuple[list[dict[str, Any]], int, bool]:
    """The head's leading steps the specification expresses (as their components declare),
    how many, and whether the output is then a mask."""
    operations: list[dict[str, Any]] = []
    binary = False
    expressed = 0
    for spec in specs:
        if binary:
            break  # what follows a mask works on objects: none is expressible
        declared = _declared(registry, "postprocessor", spec, spatial_ids)
        if declared is None:
            break
        operations += declared
        binary = _makes_mask(declared)
        expressed += 1
    if not binary:
        operations.append({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}})
    return operations, expressed, binary


def _declared(
    registry: ComponentRegistry, kind: str, spec: Any, spatial_ids: tuple[str, ...]
) -> list[dict[str, Any]] | None:
    to_operations = registry.get(kind, spec.name).extras.get("bioimageio")
    if to_operations is None:
        return None
    operations = to_operations(spec.params(), list(spatial_ids))
    return None if operations is None else [dict(op) for op in operations]


def _makes_mask(operations: list[dict[str, Any]]) -> bool:
    last = operations[-1] if operations else {}
    dtype = str(last.get("kwargs", {}).get("dtype", "")) if last.get("id") == "ensure_dtype" else ""
    return dtype.startswith(("uint", "int", "bool"))


def _describe(spec: Any) -> str:
    params = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.params().items()) if v is not None)
    return f"{spec.name}({params})"
