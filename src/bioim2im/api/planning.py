"""Planning: a dataset and this machine -> a commented preset fitted to them (:func:`plan`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from bioim2im.api.options import Arg, Opt
from bioim2im.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

    from bioim2im.planning import Plan

PathLike = str | os.PathLike[str]


@dataclass
class PlanResult:
    """A preset planned for a dataset and this machine (:func:`plan`)."""

    text: str
    """The preset file: ``extends`` the task's preset, each planned value with its reason."""
    path: Path | None
    """Where it was written (None: not written)."""
    plan: Plan
    """Task, base preset, fingerprint, machine, measured seconds per step, and the choices."""

    @property
    def task(self) -> str:
        return self.plan.task

    @property
    def base(self) -> str:
        return self.plan.base

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "path": None if self.path is None else str(self.path),
            "task": plan.task,
            "base": plan.base,
            "machine": asdict(plan.machine),
            "budget_minutes": plan.budget_minutes,
            "seconds_per_step": plan.seconds_per_step,
            "choices": [asdict(c) for c in plan.choices],
            "fingerprint": plan.fingerprint.to_json(),
        }

    def stdout_text(self) -> str:
        """The preset itself when it was not written to a file."""
        return self.text if self.path is None else ""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.path is None:
            return
        from rich.text import Text

        yield Text.assemble(
            ("✓", "green"),
            f" {self.path}: task {self.task}, extends {self.base}; train it with: "
            f"bioim2im train {self.path}",
        )


def plan(
    data: Annotated[
        PathLike,
        Arg(
            "The training data, as data.path: a folder (IM/ and GT/, or NAME_IM.tif pairs) or a "
            "CSV manifest."
        ),
    ],
    *,
    task: Annotated[
        str,
        Opt(
            "auto (from the targets), segmentation, instance, n2v, restoration, labelfree, "
            "superres, pix2pix, cyclegan or multitask."
        ),
    ] = "auto",
    budget_minutes: Annotated[
        float | None,
        Opt(
            "Minutes of training: the steps are fitted to them (a few steps are timed here). "
            "Default: the task preset's steps.",
            ("--budget",),
            metavar="MINUTES",
        ),
    ] = None,
    device: Annotated[str, Opt("auto, cpu or cuda: what the training will run on.")] = "auto",
    output: Annotated[
        PathLike | None, Opt("Write the preset here (default: print it).", ("--output", "-o"))
    ] = None,
    overwrite: Annotated[bool, Opt("Replace an existing --output file.")] = False,
    axes: Annotated[
        str | None, Opt('Axes of files whose metadata does not say, e.g. "ZYX".')
    ] = None,
    voxel_size: Annotated[
        str | Sequence[float] | None,
        Opt("Voxel size of files whose metadata does not say, e.g. 2.5,1,1.", metavar="Z,Y,X"),
    ] = None,
    seconds_per_step: Annotated[
        float | None,
        Opt(
            "Seconds per training step on the target machine, instead of timing steps here.",
            ("--step-seconds",),
        ),
    ] = None,
) -> PlanResult:
    """Write a preset fitted to the data and this machine: patch size, network levels and
    strides, batch size, normalisation, steps for a time budget; each value with its reason.

    ``data`` is a folder or CSV manifest, as ``data.path``. Its fingerprint (shapes, voxel
    sizes, intensities, objects) and this machine (``device``: auto, cpu or cuda) decide patch
    size, network levels and strides, batch size, normalisation, the instance decoder's size
    limit and, for ``budget_minutes`` of training, the steps (timed on a few real steps, or
    ``seconds_per_step``). ``task`` is one of :data:`bioim2im.planning.TASKS` or ``auto``
    (from the targets). ``voxel_size`` is given as numbers or as text ("2.5,1,1"). The preset
    extends the task's shipped preset; it is written to ``output`` (an existing file only with
    ``overwrite``) after it validated, with ``data.path`` relative to it."""
    from bioim2im.config.loading import load_preset as load
    from bioim2im.io.atomic import check_output_file, partial_path, write_text
    from bioim2im.planning import plan_data
    from bioim2im.planning.write import relative_data_path, render

    sizes = _voxel_size(voxel_size)
    source = Path(data)
    target = Path(output) if output is not None else None
    if target is not None:
        if target.is_dir():
            raise UserError(
                f"--output {target} is a directory; give a file name, e.g. {target}/plan.toml"
            )
        if not target.parent.is_dir():
            raise UserError(f"--output {target}: {target.parent} is not a folder")
        reads = [source] if source.is_file() else []
        check_output_file(target, "--output", overwrite=overwrite, inputs=reads)
    planned = plan_data(
        source,
        task=task,
        budget_minutes=budget_minutes,
        device=device,
        axes=axes,
        voxel_size=sizes,
        seconds_per_step=seconds_per_step,
    )
    where = relative_data_path(source, target) if target is not None else str(source.resolve())
    text = render(planned, where)
    # The file validates where it will live (its data.path is relative to it) before it does.
    if target is not None:
        trial = partial_path(target, f"check-{os.getpid()}")
        try:
            trial.write_text(text, encoding="utf-8")
            load(trial)
        finally:
            trial.unlink(missing_ok=True)
        write_text(target, text)
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bioim2im-plan-") as folder:
            trial = Path(folder) / "plan.toml"
            trial.write_text(text, encoding="utf-8")
            load(trial)
    return PlanResult(text, target, planned)


def _voxel_size(given: str | Sequence[float] | None) -> list[float] | None:
    """Voxel sizes given as numbers or as text ("Z,Y,X"): 2 or 3 positive finite numbers."""
    if given is None:
        return None
    values: list[float] = []
    try:
        parts = given.split(",") if isinstance(given, str) else list(given)
        values = [float(v) for v in parts]
    except (TypeError, ValueError):
        values = []
    if len(values) not in (2, 3) or not all(math.isfinite(v) and v > 0 for v in values):
        shown = given if isinstance(given, str) else str(given)
        raise UserError(
            f"--voxel-size {shown!r}: give 2 (Y,X) or 3 (Z,Y,X) positive numbers, e.g. 2.5,1,1"
        )
    return values
