"""The planned preset as a TOML file: ``extends`` the task's preset, then each planned value
under its table, with the reason for it in a comment above."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from bioim2im._version import __version__
from bioim2im.config import toml_out
from bioim2im.config.loading import name_first

if TYPE_CHECKING:
    from bioim2im.planning.fingerprint import Fingerprint
    from bioim2im.planning.plan import Plan

WIDTH = 99


def render(plan: Plan, data_path: str) -> str:
    """The preset file of ``plan``; ``data_path`` as it is written for ``data.path``."""
    lines = [*_comment(_header(plan)), ""]
    lines.append(f"extends = {toml_out.value(plan.base)}")
    tables: dict[str, list[tuple[str, str, str]]] = {"data": [("path", data_path, "")]}
    for choice in plan.choices:
        table, _, name = choice.key.rpartition(".")
        text = toml_out.value(name_first(choice.value))
        tables.setdefault(table, []).append((name, text, choice.why))
    for i, (table, entries) in enumerate(tables.items()):
        lines += ["", f"[{'.'.join(toml_out.key(k) for k in table.split('.'))}]"]
        for name, text, why in entries:
            if i == 0 and name == "path":
                lines.append(f"path = {toml_out.value(text)}")
                continue
            lines += _comment(why)
            lines.append(f"{toml_out.key(name)} = {text}")
    return "\n".join(lines) + "\n"


def relative_data_path(data: Path, output: Path) -> str:
    """``data`` relative to the folder of ``output`` (presets resolve paths from their file)
    when it is below it or near it, else absolute."""
    data, folder = data.resolve(), output.resolve().parent
    try:
        relative = os.path.relpath(data, folder)
    except ValueError:  # another drive
        return str(data)
    return relative if relative.count("..") <= 2 else str(data)


def _comment(text: str) -> list[str]:
    return [f"# {line}" if line else "#" for line in _wrap(text)]


def _wrap(text: str) -> list[str]:
    out: list[str] = []
    for paragraph in text.split("\n"):
        out += textwrap.wrap(paragraph, WIDTH - 2, break_on_hyphens=False) or [""]
    return out


def _header(plan: Plan) -> str:
    fp = plan.fingerprint
    budget = (
        f"for a budget of {plan.budget_minutes:g} minutes of training"
        if plan.budget_minutes is not None
        else "without a time budget (the preset's steps)"
    )
    lines = [
        f"Planned by `bioim2im plan` (bioim2im {__version__}) for task {plan.task!r} on "
        f"{plan.machine.describe()}, {budget}.",
        "The data:",
        *_describe(fp),
        f"Each value below says what it was derived from; everything else comes from "
        f"{plan.base!r}, which this preset extends (`bioim2im presets show {plan.base}`).",
    ]
    return "\n".join(lines)


def _describe(fp: Fingerprint) -> list[str]:
    shape = " x ".join(map(str, fp.median_shape))
    smallest = " x ".join(map(str, fp.min_shape))
    size = (
        f"voxel size {fp.voxel_size} ({fp.voxel_size_source})"
        if fp.voxel_size is not None
        else "voxel size unknown (taken as isotropic)"
    )
    i = fp.intensity
    lines = [
        f"- {fp.images} {fp.spatial_dims}D image(s) ({fp.axes}) of {fp.channels} channel(s), "
        f"{fp.dtype}; median shape {shape}, smallest {smallest}; {size}",
        f"- intensities: p0.1 {i['p0.1']:.4g}, p1 {i['p1']:.4g}, median {i['p50']:.4g}, "
        f"p99 {i['p99']:.4g}, p99.9 {i['p99.9']:.4g}",
    ]
    for target in fp.targets.values():
        text = f"- {target.name}/: "
        if target.kind == "image":
            text += "images"
            if target.shape_ratio and any(abs(r - 1) > 0.01 for r in target.shape_ratio):
                text += f", {' x '.join(f'{r:g}' for r in target.shape_ratio)} the inputs' size"
        else:
            text += (
                "instance labels"
                if target.kind == "instance"
                else (f"labels of {target.classes} values")
            )
        objects = target.objects
        if objects is not None and objects.count:
            extents = ", ".join(
                f"{a} {'-'.join(f'{v:.0f}' for v in values)}"
                for a, values in objects.extent.items()
            )
            text += (
                f"; {objects.count} objects ({objects.per_image:g} per image), extents (5th, "
                f"50th, 95th percentile) {extents} voxels, {objects.foreground:.0%} foreground, "
                f"{objects.touching:.0%} touching another"
            )
        lines.append(text)
    return lines
