"""How a bioim2im model looks as a bioimage.io model: its tensors, their axes and sizes, and its
pre- and postprocessing in the specification's own operations.

- Input ``input``: axes batch, channel, (z,) y, x; each spatial size ``min + n * step`` with
  ``step`` the network's divisor (a network taking one size, e.g. UNETR, has that size).
- One output per head, named after it: axes batch, channel, the spatial axes the head keeps,
  each sized from the input's (``scale`` 1/upsampling for an upsampling head) with a ``halo``:
  half the overlap of bioim2im's prediction windows, the border a tiling consumer should drop.
  ``min`` is the smallest size that keeps something once the halo is dropped.
- Preprocessing: ``data.normalize`` as ``scale_range`` (percentile, minmax),
  ``zero_mean_unit_variance`` (zscore) or ``scale_linear`` (fixed_range), per channel.
- Postprocessing: the head's steps up to the first one the specification cannot express
  (sigmoid, softmax, threshold -> binarize); the others (argmax, watershed, connected
  components, size filters, hole filling) are described in the README and stay in the attached
  preset, from which ``bioim2im predict`` runs them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bioim2im.errors import UserError
from bioim2im.export.source import Source

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
    input_halo = [int(o * w) // 2 for o, w in zip(overlaps, window, strict=True)]
    fixed, divisor = source.fixed_size, source.divisor
    sizes: list[tuple[int, int] | int] = []
    for a in range(dims):
        if fixed is not None:
            sizes.append(fixed[a])
        else:
            # The smallest multiple of the divisor that keeps voxels once both halos are dropped.
            sizes.append((divisor * (2 * input_halo[a] // divisor + 1), divisor))
    names = _tensor_names(source.heads)
    outputs = []
    for head in source.heads:
        output = model.heads[head]
        geometry = output.geometry
        operations, expressed, binary = _postprocessing(preset.model.heads[head].postprocess)
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
        input=INPUT if INPUT not in names.values() else "raw",
        spatial_ids=spatial_ids,
        in_channels=model.in_channels,
        sizes=sizes,
        preprocessing=preprocessing(preset.data.normalize, spatial_ids),
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


def preprocessing(normalize: Any, spatial_ids: tuple[str, ...]) -> list[dict[str, Any]]:
    """``data.normalize`` in the specification's operations (per channel)."""
    params = normalize.params()
    axes = list(spatial_ids)
    first = {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}
    if normalize.name == "percentile":
        steps = [
            {
                "id": "scale_range",
                "kwargs": {
                    "axes": axes,
                    "min_percentile": float(params.get("lower", 1.0)),
                    "max_percentile": float(params.get("upper", 99.8)),
                },
            }
        ]
        if params.get("clip"):
            steps.append({"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}})
        return [first, *steps]
    if normalize.name == "minmax":
        scale = {"axes": axes, "min_percentile": 0.0, "max_percentile": 100.0}
        return [first, {"id": "scale_range", "kwargs": scale}]
    if normalize.name == "zscore":
        return [first, {"id": "zero_mean_unit_variance", "kwargs": {"axes": axes}}]
    if normalize.name == "fixed_range":
        low, high = float(params["min"]), float(params["max"])
        linear = {"gain": 1.0 / (high - low), "offset": -low / (high - low)}
        return [first, {"id": "scale_linear", "kwargs": linear}]
    raise UserError(
        f"data.normalize '{normalize.name}' has no bioimage.io equivalent (percentile, minmax, "
        "zscore and fixed_range have one); export the network with --format onnx or torchscript"
    )


def _postprocessing(specs: list[Any]) -> tuple[list[dict[str, Any]], int, bool]:
    """The head's leading steps the specification expresses, how many, and whether the output
    is then a 0/1 mask."""
    operations: list[dict[str, Any]] = []
    binary = False
    expressed = 0
    for spec in specs:
        if binary:
            break  # what follows a mask works on objects: none is expressible
        if spec.name == "sigmoid":
            operations.append({"id": "sigmoid"})
        elif spec.name == "softmax":
            operations.append({"id": "softmax", "kwargs": {"axis": "channel"}})
        elif spec.name == "threshold":
            value = float(spec.params().get("value", 0.5))
            operations.append({"id": "binarize", "kwargs": {"threshold": value}})
            operations.append({"id": "ensure_dtype", "kwargs": {"dtype": "uint8"}})
            binary = True
        else:
            break
        expressed += 1
    if not binary:
        operations.append({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}})
    return operations, expressed, binary


def _describe(spec: Any) -> str:
    params = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.params().items()) if v is not None)
    return f"{spec.name}({params})"
