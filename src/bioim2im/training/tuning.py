"""Tuning of instance postprocessing on the validation images, at the end of training.

How probabilities become objects depends on thresholds (a seeded watershed's foreground and
seed thresholds, or its seed spacing; EmbedSeg's foreground and seed thresholds), and the best
values depend on how confident the trained network turned out. The tuned step is the first
postprocessor registered with ``tuned``: a function of its parameters giving the values to try
for each parameter it tunes. As StarDist does, they are chosen by a grid search on the validation
images, for the highest mean AP at IoU 0.5, and saved with the model: in the preset inside
``checkpoints/best.pt`` and ``last.pt`` and in ``RUN_DIR/preset.toml``, so that prediction uses
them. ``RUN_DIR/tuning.json`` records the values tried and their scores.

The network tuned for is the one prediction uses, ``best.pt``; the pointwise part of the
postprocessing (sigmoid, softmax) runs once per image, the rest once per candidate.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from bioim2im.config.schema import Preset
    from bioim2im.data.dataset import PatchDataset
    from bioim2im.formats.trained_model import TrainedModel
    from bioim2im.plugin.registry import ComponentRegistry

Grid = Callable[[Mapping[str, Any]], Mapping[str, Sequence[float]]]
"""A tuned postprocessor's ``tuned``: its parameters -> the values to try per tuned parameter."""
MAX_IMAGES = 16
CROP_PATCHES = 4
"""Tuning looks at most at MAX_IMAGES validation images, each cropped around its centre to
CROP_PATCHES patch sizes per axis: enough objects to choose thresholds, bounded time."""
IOU = 0.5


@dataclass
class _Image:
    """One validation image's pointwise-postprocessed output and its true labels."""

    values: np.ndarray
    truth: np.ndarray
    excluded: np.ndarray
    """Voxels left out of the score (cost map 0, unannotated)."""


def tune_postprocessing(
    run_dir: Path,
    preset: Preset,
    val_data: PatchDataset | None,
    registry: ComponentRegistry,
    *,
    device: str | torch.device = "cpu",
    report: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Tune each instance head's tuned step (a watershed, EmbedSeg's clustering) on the
    validation images of a finished run
    (``run_dir``, trained from ``preset``) and save the values.

    Returns head -> the chosen parameters, the AP@0.5 before and after; empty when there is
    nothing to tune (no instance head with a tuned step, or no validation images).
    """
    heads = {
        name: found
        for name, head in preset.model.heads.items()
        if head.task == "instance"
        and (found := _tuned_step(head.postprocess, registry)) is not None
    }
    best = run_dir / "checkpoints" / "best.pt"
    if not heads or val_data is None or not best.is_file():
        return {}
    from bioim2im.formats import load_model

    model = load_model(best, device=device)
    images = _validation_outputs(val_data, model, list(heads), preset.predict.tta)
    data = preset.model_dump(mode="json", exclude_none=True)
    results: dict[str, dict[str, Any]] = {}
    for name, (index, grid) in heads.items():
        steps = data["model"]["heads"][name]["postprocess"]
        # The pointwise steps already ran; the candidates vary the rest of the chain.
        rest = steps[len(model.heads[name].pointwise) :]
        position = index - len(model.heads[name].pointwise)
        chosen, before, after, tried = _search(registry, rest, position, grid, images[name])
        steps[index] = chosen
        step_name = chosen["name"]
        results[name] = {
            "step": step_name,
            "params": {k: chosen[k] for k in grid(chosen)},
            "ap@0.50 before": before,
            "ap@0.50 after": after,
            "images": len(images[name]),
            "tried": tried,
        }
        if report is not None:
            values = ", ".join(f"{k} {v}" for k, v in results[name]["params"].items())
            report(
                f"tuned head '{name}' {step_name} on {len(images[name])} validation image(s): "
                f"{values} (AP@0.5 {before:.3f} -> {after:.3f})"
            )
    _save(run_dir, registry, data, results)
    return {name: {k: v for k, v in r.items() if k != "tried"} for name, r in results.items()}


def _tuned_step(postprocess: Sequence[Any], registry: ComponentRegistry) -> tuple[int, Grid] | None:
    """The position and grid of the first step registered as tuned, if any."""
    for index, step in enumerate(postprocess):
        grid = registry.get("postprocessor", step.name).extras.get("tuned")
        if grid is not None:
            return index, grid
    return None


def _candidates(params: Mapping[str, Any], grid: Grid) -> Iterator[dict[str, Any]]:
    """The preset's own parameters first, then every combination of the grid."""
    yield dict(params)
    values_of = grid(params)
    keys = list(values_of)
    for values in itertools.product(*(values_of[k] for k in keys)):
        yield {**params, **dict(zip(keys, values, strict=True))}


def _search(
    registry: ComponentRegistry,
    steps: list[dict[str, Any]],
    position: int,
    grid: Grid,
    images: list[_Image],
) -> tuple[dict[str, Any], float, float, list[dict[str, Any]]]:
    """(best parameters, AP before, AP after, every candidate's score) for one head."""

    def score(params: dict[str, Any]) -> float:
        chain = [
            registry.get("postprocessor", spec["name"]).build(
                {k: v for k, v in spec.items() if k != "name"}
            )
            for spec in (*steps[:position], params, *steps[position + 1 :])
        ]
        return float(np.mean([_ap(chain, image) for image in images]))

    tried = []
    best_params, best_score = steps[position], -1.0
    for params in _candidates(steps[position], grid):
        value = score(params)
        tried.append({**{k: params[k] for k in grid(params)}, "ap@0.50": value})
        # Strictly better only: on a tie the preset's own values (tried first) stay.
        if value > best_score:
            best_params, best_score = params, value
    return best_params, tried[0]["ap@0.50"], best_score, tried


def _ap(chain: Sequence[Callable[[np.ndarray], np.ndarray]], image: _Image) -> float:
    from bioim2im.metrics.instance import detection_scores, instance_overlaps

    labels = image.values
    for step in chain:
        labels = np.asarray(step(labels))
    labels = np.where(image.excluded, 0, labels[0])
    overlaps = instance_overlaps(labels, image.truth)
    return detection_scores(overlaps, IOU)[f"ap@{IOU:.2f}"]


def _validation_outputs(
    val: PatchDataset, model: TrainedModel, heads: list[str], tta: bool | list[list[int]]
) -> dict[str, list[_Image]]:
    """Per head, each validation image (cropped) predicted whole and pointwise-postprocessed,
    with the preset's test-time flips (``tta``) as prediction will run them: averaged over
    flips, seed maps peak lower, and thresholds chosen without them would not fit."""
    from bioim2im.data.targets import split_valid
    from bioim2im.prediction.blockwise import predict_array

    settings = model.preset.predict
    targets = {t.head: t for t in val.prep.heads}
    images: dict[str, list[_Image]] = {name: [] for name in heads}
    for number in range(min(len(val.entries), MAX_IMAGES)):
        volume = val.volume(number)
        region = _centre_crop(volume.shape, [CROP_PATCHES * p for p in val.patch_size])
        image = volume.image.read(region)
        outputs = predict_array(
            model.network,
            image,
            roi_size=model.window(image.shape[-len(model.roi_size) :]),
            out_channels={name: model.heads[name].out_channels for name in heads},
            head_geometry={name: model.heads[name].geometry for name in heads},
            overlap=settings.overlap,
            blend=settings.blend,
            batch_size=settings.batch_size,
            tta=tta,
            device=model.device,
            amp_dtype=model.amp_dtype,
        )
        cost_map = volume.cost_map.read(region) if volume.cost_map is not None else None
        for name in heads:
            target = targets[name]
            truth = volume.targets[name].read(target.region(region))
            weights = target.cost_map(cost_map) if cost_map is not None else None
            truth, weight = split_valid(truth, target.ignore_value, weights)
            images[name].append(
                _Image(
                    model.heads[name].run_pointwise(outputs[name]),
                    truth[0].astype(np.int64),
                    weight[0] == 0,
                )
            )
    return images


def _centre_crop(shape: Sequence[int], most: Sequence[int]) -> list[slice]:
    starts = [max(0, (n - m) // 2) for n, m in zip(shape, most, strict=True)]
    return [slice(s, s + min(n, m)) for s, n, m in zip(starts, shape, most, strict=True)]


def _save(
    run_dir: Path, registry: ComponentRegistry, data: dict[str, Any], results: Mapping[str, Any]
) -> None:
    """The tuned preset into the checkpoints and ``preset.toml``; ``tuning.json``."""
    from bioim2im.config import to_toml
    from bioim2im.config.loading import validate
    from bioim2im.io.atomic import write_text
    from bioim2im.model.checkpoint import load_checkpoint, save_checkpoint

    tuned: Preset = validate(data, registry, "the tuned preset")
    text = to_toml(tuned)
    for name in ("best", "last"):
        path = run_dir / "checkpoints" / f"{name}.pt"
        if path.is_file():
            state = load_checkpoint(path)
            state["preset"] = text
            save_checkpoint(state, path)
    write_text(run_dir / "preset.toml", text)
    write_text(run_dir / "tuning.json", json.dumps(results, indent=2) + "\n")
