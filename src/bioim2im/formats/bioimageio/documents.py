"""The human side of a bioimage.io package: its README and its cover image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bioim2im._version import __version__
from bioim2im.formats.bioimageio.layout import Layout
from bioim2im.formats.export.source import Source

OFFLINE_SKIPS = (
    "checking that the URLs the description cites exist (citations, links)",
    "checking GitHub user names of authors and maintainers",
    "downloading files the description references by URL (this package holds all its files)",
)
"""What bioimageio.core's model test would do with a network; the export runs it offline."""


def readme(
    source: Source,
    layout: Layout,
    *,
    name: str,
    description: str,
    weights: Sequence[str],
    core_version: str,
    standalone: bool = False,
) -> str:
    preset = source.model.preset
    lines = [f"# {name}", "", description, ""]
    origin = f"run directory `{source.run_dir.name}`" if source.run_dir else "a checkpoint"
    step = f" at step {source.step}" if source.step is not None else ""
    lines += [
        f"Exported by bioim2im {__version__} from {origin} (checkpoint "
        f"`{source.model.checkpoint.name}`{step}). The resolved training preset is attached as "
        "`preset.toml`, without the paths of the training data and files and without the "
        "experiment trackers.",
        "",
        "## Input",
        "",
        f"`{layout.input}`: {layout.in_channels} channel(s), axes "
        f"batch, channel, {', '.join(layout.spatial_ids)}. Sizes per spatial axis: "
        + ", ".join(_size(layout, a) for a in range(len(layout.spatial_ids)))
        + ".",
        "",
        f"Preprocessing: {_operations(layout.preprocessing)} (bioim2im's `data.normalize = "
        f"{preset.data.normalize.name}`, statistics per image and channel).",
        "",
        "## Outputs",
        "",
        "| tensor | head | task | channels | axes | halo | postprocessing |",
        "|---|---|---|---|---|---|---|",
    ]
    for output in layout.outputs:
        head = preset.model.heads[output.head]
        lines.append(
            f"| `{output.tensor}` | {output.head} | {head.task} | {output.channels} | "
            f"batch, {', '.join(output.axis_ids)} | {', '.join(map(str, output.halo))} | "
            f"{_operations(output.operations)} |"
        )
    if layout.window_independent:
        tiling = (
            "The network's output does not depend on the window beyond its receptive field, "
            "the halo above: a tiled prediction that drops each tile's halo (bioimageio.core's "
            "blockwise prediction) gives what `bioim2im predict` gives for this package."
        )
    else:
        tiling = (
            "The network normalises its features over the window it sees, so each output "
            "depends on the tile it is computed in: the input takes one size, bioim2im's "
            "prediction window, and a tiled prediction with tiles of that size that drops each "
            "tile's halo above (bioimageio.core's blockwise prediction) gives what `bioim2im "
            "predict` gives for this package. It differs slightly from the blended windows "
            "`bioim2im predict` uses for the training run, and more from one window over a "
            "whole image."
        )
    lines += ["", tiling]
    unexpressed = [o for o in layout.outputs if o.remaining]
    if unexpressed:
        lines += [
            "",
            "### Postprocessing the bioimage.io format cannot express",
            "",
            "The package's outputs stop before these steps of bioim2im's postprocessing, which "
            "have no bioimage.io operation. `bioim2im predict` runs them from the attached "
            "preset; other tools give the outputs above.",
            "",
        ]
        lines += [
            f"- `{o.tensor}`: " + " → ".join(f"`{r}`" for r in o.remaining) for o in unexpressed
        ]
    lines += [
        "",
        "## Weights",
        "",
        *(f"- {_weights(w, standalone)}" for w in weights),
        "",
        "## Validation",
        "",
    ]
    if source.metrics:
        lines += [
            f"Metrics of this checkpoint on the run's validation images{step} "
            "(from the run's `metrics.jsonl`):",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {k} | {v:.4g} |" for k, v in sorted(source.metrics.items())),
        ]
    else:
        lines.append("The run logged no validation metrics for this checkpoint.")
    lines += [
        "",
        "Validate the model on images of your own with `bioim2im evaluate` against ground truth.",
        "",
        "## Checks",
        "",
        f"bioim2im published this package only after bioimageio.core {core_version}'s model "
        "test passed for every weights format (test outputs reproduced from the test input; "
        "inference at three sizes and two batch sizes), run offline. Skipped because they need "
        "a network:",
        "",
        *(f"- {skip}" for skip in OFFLINE_SKIPS),
        "",
        "## Use",
        "",
        "```",
        "bioim2im predict MODEL.zip --input images/ --output predictions/",
        "```",
        "",
        "runs the package block by block (images of any size), with the postprocessing above.",
        "",
    ]
    return "\n".join(lines)


def _size(layout: Layout, axis: int) -> str:
    size = layout.sizes[axis]
    name = layout.spatial_ids[axis]
    if isinstance(size, int):
        return f"{name} = {size}"
    return f"{name} = {size[0]} + n × {size[1]}"


def _operations(operations: Sequence[Mapping[str, object]]) -> str:
    shown = []
    for operation in operations:
        kwargs: Any = operation.get("kwargs") or {}
        text = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        shown.append(f"`{operation['id']}({text})`")
    return " → ".join(shown) or "none"


def _weights(name: str, standalone: bool) -> str:
    state_dict = (
        "`pytorch_state_dict`: architecture `Network` of the attached `bioim2im_network.py`, "
        "which needs torch and MONAI only (`environment.yaml`)"
        if standalone
        else "`pytorch_state_dict`: architecture `bioim2im.model.packaged.PackagedNetwork` "
        "(needs bioim2im and the plugins whose components the network uses)"
    )
    return {
        "pytorch_state_dict": state_dict,
        "torchscript": "`torchscript`: traced with dynamic spatial sizes",
        "onnx": "`onnx`: opset 17, dynamic batch and spatial sizes",
    }.get(name, name)


def cover(image: np.ndarray, output: np.ndarray, path: Path) -> None:
    """A 2:1 PNG: the input crop (left) beside the first output channel (right)."""
    from PIL import Image

    panels = []
    for array in (image, output):
        plane = np.asarray(array[0], dtype=np.float32)
        while plane.ndim > 2:  # the middle plane of a volume
            plane = plane[plane.shape[0] // 2]
        low, high = np.percentile(plane, [0.5, 99.5]) if plane.size else (0.0, 1.0)
        scaled = np.clip((plane - low) / max(float(high - low), 1e-6), 0, 1)
        picture = Image.fromarray((scaled * 255).astype(np.uint8))
        panels.append(picture.resize((256, 256), Image.Resampling.NEAREST))
    canvas = Image.new("L", (512, 256))
    canvas.paste(panels[0], (0, 0))
    canvas.paste(panels[1], (256, 0))
    canvas.save(path)
