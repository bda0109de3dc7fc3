"""What an export starts from: a run's checkpoint (its network, preset and heads), the
validation metrics of that checkpoint, the window sizes the network takes, and an image of the
run's own data to cut test tensors from."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bioim2im.errors import UserError

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.formats.trained_model import TrainedModel
    from bioim2im.io.images import TimePoint


@dataclass
class Source:
    """A checkpoint ready to export."""

    model: TrainedModel
    """Its network is a torch module on the CPU."""
    heads: list[str]
    """The heads exported, in order."""
    run_dir: Path | None
    step: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    """Validation metrics of the checkpoint (``val/...``), from the run's metrics.jsonl."""

    @property
    def name(self) -> str:
        """A name for the files: the run directory's, else the checkpoint's."""
        return self.run_dir.name if self.run_dir is not None else self.model.checkpoint.stem

    @property
    def spatial_dims(self) -> int:
        return self.model.spatial_dims

    @property
    def divisor(self) -> int:
        """Spatial sizes the network takes are multiples of this."""
        model = self.model
        component = model.registry.get("backbone", model.preset.model.backbone.name)
        divisor_of = component.extras.get("divisor")
        return int(divisor_of(model.preset.model.backbone.params())) if divisor_of else 1

    @property
    def fixed_size(self) -> tuple[int, ...] | None:
        """The one input size of a network that takes no other (e.g. UNETR), else None."""
        model = self.model
        component = model.registry.get("backbone", model.preset.model.backbone.name)
        size_of = component.extras.get("input_size")
        return (
            tuple(int(n) for n in size_of(model.preset.model.backbone.params()))
            if size_of
            else None
        )

    def shared_preset(self) -> Preset:
        """The preset as it leaves this machine (attached to a package, inside a graph file):
        without local paths (data.path and the other path keys of a preset) and without
        experiment trackers (``logging.loggers``: their settings hold tracking URIs and
        credentials). Prediction needs none of them."""
        from bioim2im.config.loading import local_path_keys, validate

        data = self.model.preset.model_dump(mode="json", exclude_none=True)
        for *sections, key in local_path_keys(data, self.model.registry):
            table: Any = data
            for section in sections:
                table = table.get(section) if isinstance(table, dict) else None
            if isinstance(table, dict):
                table.pop(key, None)
        data.get("logging", {}).pop("loggers", None)
        return validate(data, self.model.registry, "the exported preset")

    def test_sizes(self) -> list[tuple[int, ...]]:
        """Two window sizes the network takes (one for a fixed-size network), for checking a
        conversion: the prediction window and one a divisor larger."""
        if self.fixed_size is not None:
            return [self.fixed_size]
        window = tuple(-(-n // self.divisor) * self.divisor for n in self.model.roi_size)
        return [window, tuple(n + self.divisor for n in window)]


def open_source(
    model_path: str | Path, heads: Sequence[str] = (), overrides: Sequence[str] = ()
) -> Source:
    """The checkpoint of a run directory (its best) or a checkpoint file, ready to export."""
    from bioim2im.formats.checkpoint import load_checkpoint_model
    from bioim2im.formats.model_files import is_model_file
    from bioim2im.model.checkpoint import load_checkpoint

    if is_model_file(model_path):
        raise UserError(
            f"{model_path} is already an exported model; export takes a run directory or a "
            "checkpoint file"
        )
    model = load_checkpoint_model(model_path, overrides, "cpu")
    chosen = list(dict.fromkeys(heads)) or list(model.heads)
    unknown = [h for h in chosen if h not in model.heads]
    if unknown:
        raise UserError(
            f"--head {', '.join(unknown)}: not a head of this model (its heads: "
            f"{', '.join(model.heads)})"
        )
    step = load_checkpoint(model.checkpoint).get("step")
    folder = model.checkpoint.parent
    run_dir = folder.parent if folder.name == "checkpoints" else None
    metrics = _validation_metrics(run_dir, step) if run_dir is not None else {}
    return Source(model, chosen, run_dir, step if isinstance(step, int) else None, metrics)


def _validation_metrics(run_dir: Path, step: Any) -> dict[str, float]:
    """The validation metrics logged at ``step`` (the checkpoint's), else the last ones."""
    path = run_dir / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        if isinstance(row, dict) and any(str(k).startswith("val/") for k in row):
            rows.append(row)
    chosen = next((r for r in reversed(rows) if r.get("step") == step), rows[-1] if rows else {})
    return {
        k: float(v)
        for k, v in chosen.items()
        if k.startswith("val/") and isinstance(v, int | float) and math.isfinite(v)
    }


# ---------------------------------------------------------------------------------------------
# The image test tensors are cut from


@dataclass
class TestImage:
    """The image test tensors are cut from, read region by region."""

    path: Path
    view: TimePoint
    spatial_shape: tuple[int, ...]

    def read(self, region: Sequence[slice]) -> np.ndarray:
        """``region`` (one slice per spatial axis, ZYX order) as ``(C, *spatial)`` float32."""
        view = self.view
        by_axis = dict(zip(view.spatial_axes, region, strict=True))
        data = view.read(tuple(by_axis.get(a, slice(None)) for a in range(len(view.shape))))
        other = [a for a in range(data.ndim) if a not in view.spatial_axes]
        data = data.transpose(*other, *view.spatial_axes)
        return data.reshape(-1, *data.shape[len(other) :]).astype(np.float32)


def test_image(source: Source, given: Path | None) -> TestImage:
    """``given``, else the first validation image of the run's dataset (else a training one)."""
    from bioim2im.formats.trained_model import mismatch
    from bioim2im.io import open_image
    from bioim2im.io.images import InputImage

    model = source.model
    path = given if given is not None else _dataset_image(source)
    image = open_image(path, axes=model.preset.data.axes, registry=model.registry)
    found = InputImage(path, path.stem, image)
    problem = mismatch(found, model)
    if problem:
        raise UserError(f"--test-image: {problem}" if given else problem)
    return TestImage(path, found.at(0), found.spatial_shape)


def _dataset_image(source: Source) -> Path:
    from bioim2im.data.layouts import dataset_layout

    preset = source.model.preset
    data = preset.data
    hint = "give an image to cut the test tensors from with --test-image"
    registry = source.model.registry
    try:
        layout = dataset_layout(preset, registry)
        if data.path is None or not Path(data.path).exists():
            raise UserError(f"the run's dataset ({data.path}) is not there")
        splits = layout.image_pairs(preset, registry=registry)
    except UserError as exc:
        raise UserError(f"{exc}: {hint}") from None
    pairs = splits.val or splits.train or splits.test
    if not pairs:
        raise UserError(f"no image found in the run's dataset ({data.path}): {hint}")
    return pairs[0].image
