"""Presets that fit the data and the machine (``bioim2im plan``, ``data.plan = true``).

- :mod:`~bioim2im.planning.fingerprint`: what the data are (shapes, voxel sizes, intensities,
  objects);
- :mod:`~bioim2im.planning.rules`: the rules that turn a fingerprint and a machine into preset
  values, each with its reason;
- :mod:`~bioim2im.planning.machine`: the machine, and a few timed training steps;
- :mod:`~bioim2im.planning.plan`: the plan for a task (the shipped preset it extends and the
  values it changes);
- :mod:`~bioim2im.planning.write`: the plan as a commented preset file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bioim2im.planning.plan import TASKS, Plan, choose_base, detect_task, make_plan, task_of
from bioim2im.planning.rules import Choice, Machine

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.planning.fingerprint import Fingerprint
    from bioim2im.plugin.registry import ComponentRegistry

__all__ = [
    "TASKS",
    "Choice",
    "Machine",
    "Plan",
    "plan_data",
    "plan_preset",
]


def plan_data(
    data: str | Path,
    *,
    task: str = "auto",
    budget_minutes: float | None = None,
    device: str = "auto",
    axes: str | None = None,
    voxel_size: Sequence[float] | None = None,
    seconds_per_step: float | None = None,
    registry: ComponentRegistry | None = None,
) -> Plan:
    """The plan for the dataset at ``data`` (a folder or CSV manifest, as ``data.path``)."""
    from bioim2im.config.loading import load_preset
    from bioim2im.errors import UserError
    from bioim2im.planning.machine import this_machine
    from bioim2im.planning.plan import fingerprint_of

    if registry is None:
        from bioim2im.plugin.manager import get_registry

        registry = get_registry()
    if task != "auto" and task not in TASKS:
        raise UserError(f"--task {task!r}: choose one of auto, {', '.join(TASKS)}")
    if budget_minutes is not None and not budget_minutes > 0:
        raise UserError(f"--budget {budget_minutes}: give a positive number of minutes")
    if seconds_per_step is not None and not seconds_per_step > 0:
        raise UserError(f"--step-seconds {seconds_per_step}: give a positive number of seconds")
    path = Path(data)
    if not path.exists():
        raise UserError(f"{path}: no such folder or manifest")
    machine = this_machine(device)
    # The targets to look for are the task's (GT/ for most); "auto" looks for GT/.
    probe = "segmentation" if task == "auto" else task
    first = next(iter(TASKS[probe].values()))
    overrides = [f"data.path={json.dumps(str(path.resolve()))}"]
    base = load_preset(first, overrides, registry)
    if task == "auto":
        found = _auto_fingerprint(base, registry, axes, voxel_size, overrides)
        if found is None:
            task = "n2v"
            base = load_preset(TASKS["n2v"][2], overrides, registry)
            fp = fingerprint_of(base, registry, axes=axes, voxel_size=voxel_size)
        else:
            fp = found
            task = detect_task(fp)
    else:
        fp = fingerprint_of(base, registry, axes=axes, voxel_size=voxel_size)
    name = choose_base(task, fp.spatial_dims)
    base = load_preset(name, overrides, registry)

    def time_step(preset: Preset) -> float:
        from bioim2im.planning.machine import seconds_per_step as measured

        return (
            seconds_per_step
            if seconds_per_step is not None
            else measured(preset, registry, machine)
        )

    return make_plan(
        fp,
        base,
        base_name=name,
        task=task,
        machine=machine,
        budget_minutes=budget_minutes,
        registry=registry,
        time_step=time_step,
        voxel_size_given=voxel_size is not None,
        axes_given=axes,
        measured=seconds_per_step is None,
    )


def _auto_fingerprint(
    base: Preset,
    registry: ComponentRegistry,
    axes: str | None,
    voxel_size: Sequence[float] | None,
    overrides: list[str],
) -> Fingerprint | None:
    """The fingerprint with the GT/ targets, or None when the data have none (Noise2Void)."""
    from bioim2im.data.sources import find_pairs, reader_suffixes
    from bioim2im.planning.plan import fingerprint_of

    assert base.data.path is not None
    found = find_pairs(Path(base.data.path), targets=("GT",), suffixes=reader_suffixes(registry))
    if not any(found.pairs.values()) and any("GT" in p for p in found.problems):
        return None
    return fingerprint_of(base, registry, axes=axes, voxel_size=voxel_size)


def plan_preset(
    preset: str | Path,
    overrides: Sequence[str],
    *,
    registry: ComponentRegistry,
    device: str = "auto",
) -> tuple[Preset, Plan]:
    """``preset`` (with ``data.plan = true``) planned for its data and this machine: the plan's
    values over the preset's, ``overrides`` over both; the time budget is ``train.max_minutes``
    (none: the preset's steps are kept)."""
    from bioim2im.config.loading import apply_overrides, find_preset, merge, resolve, validate
    from bioim2im.planning.machine import seconds_per_step, this_machine
    from bioim2im.planning.plan import fingerprint_of

    base = validate(
        resolve(find_preset(preset, registry), overrides, registry), registry, f"preset {preset}"
    )
    machine = this_machine(device)
    fp = fingerprint_of(base, registry)
    task = task_of(base)
    plan = make_plan(
        fp,
        base,
        base_name=str(preset),
        task=task,
        machine=machine,
        budget_minutes=base.train.max_minutes,
        registry=registry,
        time_step=lambda p: seconds_per_step(p, registry, machine),
    )
    path = find_preset(preset, registry)
    data = apply_overrides(
        merge(resolve(path, [], registry), plan.overrides()), overrides, registry
    )
    data.setdefault("data", {})["plan"] = False
    return validate(data, registry, f"preset {preset} as planned"), plan
