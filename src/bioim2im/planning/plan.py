"""Plan a preset for a dataset and a machine: fingerprint the data, apply the rules of
:mod:`bioim2im.planning.rules` to the task's preset, time a few steps, fit the steps to the
budget."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.errors import UserError
from bioim2im.planning import rules
from bioim2im.planning.fingerprint import Fingerprint, measure
from bioim2im.planning.rules import Choice, Machine

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.plugin.registry import ComponentRegistry

TASKS: dict[str, dict[int, str]] = {
    "segmentation": {2: "segmentation-2d", 3: "segmentation-3d"},
    "instance": {2: "instance-2d", 3: "instance-3d"},
    "n2v": {2: "n2v-2d", 3: "n2v-2d"},
    "restoration": {2: "restoration-2d", 3: "restoration-2d"},
    "labelfree": {2: "labelfree-3d", 3: "labelfree-3d"},
    "superres": {2: "superres-3d", 3: "superres-3d"},
    "pix2pix": {2: "pix2pix-2d", 3: "pix2pix-2d"},
    "cyclegan": {2: "cyclegan-2d", 3: "cyclegan-2d"},
    "multitask": {3: "multitask-3d"},
}
"""Each task and the shipped preset a plan extends, per dimensionality of the data."""

PLANNED_BACKBONES = ("unet", "n2v2_unet")
"""Backbones whose levels and strides planning chooses; others keep theirs (the patch is
still fitted to their divisor)."""
N2V_LEVELS = 3
N2V_FIRST = 16
"""Levels and first channels of the Noise2Void U-Net: unlike MONAI's (whose first convolution
is strided), it convolves at full resolution, where a CPU spends most of a step."""
LEAST_STEPS = 300
"""Fewer planned steps than this halve the batch (down to 2 in 2D, 1 in 3D) first."""


@dataclass
class Plan:
    """What ``bioim2im plan`` decided."""

    task: str
    base: str
    """The preset the plan extends (a shipped preset's name, or a file)."""
    fingerprint: Fingerprint
    machine: Machine
    budget_minutes: float | None
    seconds_per_step: float | None
    choices: list[Choice] = field(default_factory=list)

    def overrides(self) -> dict[str, Any]:
        """The planned values as one nested table (to merge onto the base preset)."""
        table: dict[str, Any] = {}
        for choice in self.choices:
            *path, last = choice.key.split(".")
            node = table
            for part in path:
                node = node.setdefault(part, {})
            node[last] = copy.deepcopy(choice.value)
        return table

    def value(self, key: str) -> Any:
        return next(c.value for c in self.choices if c.key == key)


def task_of(preset: Preset) -> str:
    """The task a preset trains (what planning calls it)."""
    heads = list(preset.model.heads.values())
    if preset.adversarial is not None:
        return "cyclegan" if preset.adversarial.cycle else "pix2pix"
    if len(heads) > 1:
        return "multitask"
    (head,) = heads
    if any(a.name == "n2v_mask" for a in preset.data.augment):
        return "n2v"
    if head.task == "instance":
        return "instance"
    if head.task == "semantic":
        return "segmentation"
    if any(v != 1 for v in head.params().get("upsample", None) or [1]):
        return "superres"
    return "restoration" if head.name == "conv" and head.loss.name == "l1" else "labelfree"


def fingerprint_of(
    preset: Preset,
    registry: ComponentRegistry,
    *,
    axes: str | None = None,
    voxel_size: Sequence[float] | None = None,
) -> Fingerprint:
    """The fingerprint of ``preset``'s training (and validation) images and their targets."""
    from bioim2im.data.sources import find_splits, reader_suffixes

    data = preset.data
    splits = find_splits(data, preset.model.heads, suffixes=reader_suffixes(registry))
    splits.ensure_usable()
    # The input's own name is not a target (Noise2Void trains on the input itself).
    pairs = [
        dataclasses.replace(p, targets={k: v for k, v in p.targets.items() if k != data.source})
        for p in [*splits.train, *splits.val]
    ]
    assert data.path is not None
    return measure(
        pairs,
        Path(data.path),
        axes=axes or data.axes,
        voxel_size=voxel_size or data.voxel_size,
        registry=registry,
    )


def detect_task(fp: Fingerprint) -> str:
    """The task a dataset looks like: labels of many ids are instances, of a few values
    classes; images as targets are restoration (same grid) or super-resolution (finer)."""
    if not fp.targets:
        return "n2v"
    target = next(iter(fp.targets.values()))
    if target.kind == "instance":
        return "instance"
    if target.kind == "classes":
        return "segmentation"
    if target.shape_ratio and any(r > 1.01 for r in target.shape_ratio):
        return "superres"
    return "restoration"


def make_plan(
    fp: Fingerprint,
    base: Preset,
    *,
    base_name: str,
    task: str,
    machine: Machine,
    budget_minutes: float | None,
    registry: ComponentRegistry,
    time_step: Callable[[Preset], float] | None,
    voxel_size_given: bool = False,
    axes_given: str | None = None,
    measured: bool = True,
) -> Plan:
    """The plan for data ``fp`` extending ``base``; ``time_step`` measures a planned preset's
    seconds per step (None: steps are not planned)."""
    plan = Plan(task, base_name, fp, machine, budget_minutes, None)
    add = plan.choices.append
    dims = fp.spatial_dims
    if axes_given:
        add(Choice("data.axes", axes_given, "the axes given to `bioim2im plan`"))
    if voxel_size_given and fp.voxel_size is not None:
        add(Choice("data.voxel_size", fp.voxel_size, "the voxel size given to `bioim2im plan`"))
    if fp.voxel_sizes_differ and fp.voxel_size is not None:
        add(
            Choice(
                "data.target_voxel_size",
                fp.voxel_size,
                "the images' voxel sizes differ by more than 10 %: each is resampled to their "
                "median on the fly (images linearly, labels nearest)",
            )
        )
    if fp.channels != base.model.in_channels:
        add(
            Choice(
                "model.in_channels",
                fp.channels,
                f"the images have {fp.channels} channel(s)",
            )
        )
    backbone = base.model.backbone
    planned_backbone = backbone.name in PLANNED_BACKBONES
    reference = list(base.data.patch_size)
    levels = len(backbone.params().get("channels", ())) or 4
    if task == "n2v":
        _n2v_backbone(plan, base)
        planned_backbone, levels = True, N2V_LEVELS
    shape, why = rules.geometry(
        fp,
        reference_patch=reference,
        reference_batch=base.data.batch_size,
        levels=levels,
        machine=machine,
    )
    if not planned_backbone:
        from bioim2im.config.build import divisors

        divisor = divisors(registry, backbone, dims)
        shape.patch = [
            rules.round_to(p, n, d)
            for p, n, d in zip(shape.patch, fp.median_shape, divisor, strict=True)
        ]
    _geometry(plan, fp, shape, why, planned_backbone, base)
    _normalisation(plan, fp, base, task)
    _task_rules(plan, fp, base, task)
    if task in ("segmentation", "instance"):
        present = [a.name for a in base.data.augment]
        more = rules.augmentations(fp, plan.value("data.patch_size"), present)
        if more is not None:
            augment = [a.model_dump(exclude_defaults=True) for a in base.data.augment]
            add(Choice("data.augment", augment + more[0], more[1]))
        flips = rules.test_time_flips(fp, plan.value("data.patch_size"))
        if flips is not None and base.predict.tta is False:
            add(Choice("predict.tta", flips[0], flips[1]))
    fraction = rules.foreground_fraction(fp, base.data.foreground_fraction)
    if fraction is not None and task in ("segmentation", "instance", "multitask"):
        add(Choice("data.foreground_fraction", fraction[0], fraction[1]))
    if budget_minutes is not None and time_step is not None:
        _fit_budget(plan, base, budget_minutes, time_step, registry, measured)
    return plan


def _geometry(
    plan: Plan,
    fp: Fingerprint,
    shape: rules.Geometry,
    why: list[str],
    planned_backbone: bool,
    base: Preset,
) -> None:
    add = plan.choices.append
    dims = fp.spatial_dims
    axes = fp.axes
    anisotropy = ""
    if fp.voxel_size is not None and dims == 3 and fp.anisotropy > rules.ANISOTROPY / 1.5:
        where = "from the files' metadata" if fp.voxel_size_source == "metadata" else "given"
        coarse = axes[max(range(dims), key=lambda a: fp.voxel_size[a])]  # type: ignore[index]
        anisotropy = (
            f"voxels are {fp.anisotropy:.3g}x longer along {coarse} than along the finest axis "
            f"(voxel size {fp.voxel_size} {where})"
        )
        cut = any(p < n for p, n in zip(shape.patch, fp.median_shape, strict=True))
        if cut:
            why.insert(
                0,
                f"{anisotropy}: the patch spans about as far physically along each axis, so it "
                f"has fewer voxels along {coarse}",
            )
    add(Choice("data.patch_size", shape.patch, "; ".join(why) or "the task preset's patch"))
    if planned_backbone:
        levels = len(shape.strides) + 1
        first = base.model.backbone.params().get("channels", (16,))[0]
        source = "the task preset's first level"
        if plan.task == "n2v":
            first, source = N2V_FIRST, "the N2V2 U-Net does its first level at full resolution"
        add(
            Choice(
                "model.backbone.channels",
                rules.channels_for(levels, first),
                f"{levels} levels, from {first} channels ({source}), doubling at each",
            )
        )
        pooled = ["/".join(axes[a] for a in range(dims) if level[a] > 1) for level in shape.strides]
        reason = (
            (f"{anisotropy}; " if anisotropy else "")
            + f"each level halves the axes that keep at least {rules.MIN_FEATURE} voxels at the "
            f"deepest level and whose voxels are less than {rules.ANISOTROPY:g}x the finest's "
            f"(nnU-Net's rule), downsampling {', '.join(pooled)} in turn; patches are "
            f"multiples of {' x '.join(map(str, shape.divisor))}"
        )
        add(Choice("model.backbone.strides", rules.strides_value(shape.strides), reason))
    voxels = math.prod(shape.patch)
    add(
        Choice(
            "data.batch_size",
            shape.batch,
            f"about the task preset's voxels per step ({base.data.batch_size} x "
            f"{math.prod(base.data.patch_size):,}) in patches of {voxels:,} voxels"
            + (" (what the GPU's memory holds)" if plan.machine.device == "cuda" else ""),
        )
    )


def _n2v_backbone(plan: Plan, base: Preset) -> None:
    """Noise2Void trains the N2V2 U-Net: no grid texture in its outputs."""
    if base.model.backbone.name == "n2v2_unet":
        return
    add = plan.choices.append
    add(
        Choice(
            "model.backbone.name",
            "n2v2_unet",
            "N2V2's U-Net (blur-pooling, interpolating upsampling, no full-resolution skip "
            "connection): a strided or max-pooling U-Net leaves a grid texture in Noise2Void "
            "outputs",
        )
    )


def _normalisation(plan: Plan, fp: Fingerprint, base: Preset, task: str) -> None:
    spec, why = rules.normalisation(fp)
    current = base.data.normalize.model_dump()
    if task in ("n2v",):
        # The target is the input itself: both normalised alike, and the preset's percentiles
        # (0.1-99.9) keep the noise's whole range.
        return
    if all(current.get(k) == v for k, v in spec.items()):
        return
    plan.choices.append(Choice("data.normalize", spec, why))


def _task_rules(plan: Plan, fp: Fingerprint, base: Preset, task: str) -> None:
    add = plan.choices.append
    dims = fp.spatial_dims
    heads = base.model.heads
    if task == "instance":
        for name, head in heads.items():
            if head.name == "embedseg" and head.out_channels != 2 * dims + 1:
                add(
                    Choice(
                        f"model.heads.{name}.out_channels",
                        2 * dims + 1,
                        f"EmbedSeg in {dims}D: an offset and a bandwidth per axis, and a seed map",
                    )
                )
            steps = [s.model_dump(exclude_defaults=True) for s in head.postprocess]
            minimum = None
            for step, spec in zip(steps, head.postprocess, strict=True):
                default = spec.model_dump().get("min_size")
                if default is not None:
                    found = rules.decoder_min_size(fp, int(default))
                    if found is not None:
                        step["min_size"], minimum = found
            if minimum is not None:
                add(Choice(f"model.heads.{name}.postprocess", steps, minimum))
            if head.name == "embedseg":
                radius = rules.embedding_radius(fp, float(head.params().get("radius", 8.0)))
                if radius is not None:
                    add(Choice(f"model.heads.{name}.radius", radius[0], radius[1]))
    if task == "segmentation":
        target = next(iter(fp.targets.values()), None)
        (name, head), *_ = heads.items()
        classes = target.classes if target is not None and target.kind == "classes" else 0
        if classes > 2 and head.out_channels == 1:
            add(
                Choice(
                    f"model.heads.{name}.out_channels",
                    classes,
                    f"the labels hold {classes} values (0..{classes - 1}, background included): "
                    "one channel per class",
                )
            )
            add(
                Choice(
                    f"model.heads.{name}.loss",
                    {"name": "dice_ce", "sigmoid": False, "softmax": True, "to_onehot_y": True},
                    "each pixel is one class: a softmax over the classes",
                )
            )
            add(
                Choice(
                    f"model.heads.{name}.postprocess",
                    [{"name": "softmax"}, {"name": "argmax"}],
                    "the class map as output",
                )
            )
    if task == "superres":
        target = next(iter(fp.targets.values()), None)
        (name, head), *_ = heads.items()
        if target is not None and target.shape_ratio:
            factors = [max(1, round(r)) for r in target.shape_ratio]
            add(
                Choice(
                    f"model.heads.{name}.upsample",
                    factors,
                    f"the targets have {' x '.join(map(str, factors))} times the inputs' voxels",
                )
            )
    masks = [a for a in base.data.augment if a.name == "n2v_mask"]
    if task == "n2v" and any(m.params().get("replacement") != "median" for m in masks):
        augment = [a.model_dump(exclude_defaults=True) for a in base.data.augment]
        for step in augment:
            if step["name"] == "n2v_mask":
                step["replacement"] = "median"
        add(
            Choice(
                "data.augment",
                augment,
                "hidden pixels show the median of their neighbourhood (N2V2), not one "
                "neighbour's noise",
            )
        )


def _fit_budget(
    plan: Plan,
    base: Preset,
    budget: float,
    time_step: Callable[[Preset], float],
    registry: ComponentRegistry,
    measured: bool,
) -> None:
    """Time the planned preset, then choose its steps (and a smaller batch if too few fit)."""
    preset = planned_preset(base, plan, registry)
    seconds = time_step(preset)
    batch = preset.data.batch_size
    least = 1 if plan.fingerprint.spatial_dims == 3 else 2
    halved = False
    while batch > least and budget * 60 * rules.STEP_SHARE / seconds < LEAST_STEPS:
        batch = max(least, batch // 2)
        seconds = seconds / 2
        halved = True
    if halved:
        choice = next(c for c in plan.choices if c.key == "data.batch_size")
        choice.value = batch
        choice.why += f"; halved to {batch} so that at least {LEAST_STEPS} steps fit the budget"
    plan.seconds_per_step = seconds
    steps, why = rules.steps_for(budget, seconds, measured=measured)
    add = plan.choices.append
    add(Choice("train.steps", steps, why))
    add(
        Choice(
            "train.max_minutes",
            float(budget),
            "the budget: training stops there even if this machine is slower than measured",
        )
    )
    warmup = base.train.scheduler.params().get("warmup_steps")
    if isinstance(warmup, int) and warmup > steps // 10:
        add(
            Choice(
                "train.scheduler.warmup_steps",
                max(1, steps // 10),
                "a tenth of the steps (the preset's warm-up is as long for many more steps)",
            )
        )
    if base.data.val_fraction > 0 or base.data.val_path is not None:
        every = max(1, steps // 5)
        add(Choice("train.val_every", every, "five validations over the run"))
        add(Choice("train.checkpoint_every", every, "a checkpoint at each validation"))


def planned_preset(base: Preset, plan: Plan, registry: ComponentRegistry) -> Preset:
    """``base`` with the plan's values, validated."""
    from bioim2im.config.loading import merge, validate

    data = base.model_dump(mode="json", exclude_none=True)
    return validate(merge(data, plan.overrides()), registry, f"the plan for {plan.base}")


def choose_base(task: str, dims: int) -> str:
    """The shipped preset a plan for ``task`` on ``dims``-D data extends."""
    if task not in TASKS:
        raise UserError(f"--task {task!r}: choose one of auto, {', '.join(TASKS)}")
    by_dims = TASKS[task]
    if dims not in by_dims:
        other = ", ".join(f"{d}D" for d in by_dims)
        raise UserError(f"--task {task} trains {other} images; the data are {dims}D")
    return by_dims[dims]
