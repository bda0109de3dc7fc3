"""The CellMap challenge workflow: :func:`datasplit`, :func:`predict_crops`, :func:`pack`,
:func:`evaluate_submission` (the ``bioim2im cellmap ...`` commands)."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from bioim2im.api.options import Arg, ModelSource, Opt, Overrides, PythonOnly, TrustModel
from bioim2im.api.prediction import MODEL_HELP
from bioim2im.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

FORCE_ALL_CLASSES = ("no", "train", "validate", "both")


@dataclass
class DatasplitResult:
    """The crops a datasplit found (and wrote, unless a dry run)."""

    found: Any
    output: Path | None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.table import Table
        from rich.text import Text

        table = Table("usage", "dataset", "crop", "classes", box=None, header_style="bold")
        for row in self.found.rows:
            table.add_row(row.usage, row.dataset, row.name, ", ".join(row.classes))
        yield table
        for note in self.found.skipped:
            yield Text.from_markup("[yellow]left out[/] ").append(note)
        counts = {u: sum(r.usage == u for r in self.found.rows) for u in ("train", "validate")}
        summary = f"{counts['train']} train, {counts['validate']} validate crop(s)"
        if self.output is None:
            yield Text(f"dry run: {summary}; nothing written")
        else:
            yield Text.from_markup("[green]✓[/] ").append(f"{self.output}: {summary}")


def datasplit(
    search_path: Annotated[
        str,
        Arg(
            "Where the crops are, with {dataset} and {crop}, e.g. "
            "'data/{dataset}/{dataset}.zarr/recon-1/labels/groundtruth/{crop}' (or s3://...).",
            metavar="SEARCH_PATH",
        ),
    ],
    *,
    classes: Annotated[str, Opt("Comma-separated classes, e.g. nuc,mito.", ("--classes", "-c"))],
    output: Annotated[str | Path, Opt("The CSV to write.", ("--output", "-o"))] = Path(
        "datasplit.csv"
    ),
    raw: Annotated[
        str | None,
        Opt(
            "Each dataset's raw data, with {dataset}; default: em/fibsem-uint8 beside the "
            "labels/groundtruth/{crop} of the search path."
        ),
    ] = None,
    val_fraction: Annotated[float, Opt("Fraction of crops to validate on (0 to 0.99).")] = 0.1,
    datasets: Annotated[str, Opt("Comma-separated dataset names or globs.")] = "*",
    crops: Annotated[str, Opt("Comma-separated crop names/numbers or globs.")] = "*",
    scale: Annotated[
        str | None,
        Opt(
            "Keep a class in a crop only if annotated at this voxel size (nm) or finer: 8 or 8,8,8."
        ),
    ] = None,
    force_all_classes: Annotated[
        str,
        Opt(
            "no, train, validate or both: crops lacking a class move out of that split (both: "
            "are left out)."
        ),
    ] = "no",
    seed: Annotated[int, Opt("Seed of the train/validate split.")] = 0,
    dry_run: Annotated[bool, Opt("Show what would be written; write nothing.")] = False,
    overwrite: Annotated[bool, Opt("Replace an existing CSV.")] = False,
) -> DatasplitResult:
    """Write a CellMap datasplit CSV (the challenge toolbox's format) of the crops found."""
    from bioim2im.io.atomic import check_output_file
    from bioim2im_cellmap.datasplit import make_datasplit, write_datasplit

    if force_all_classes not in FORCE_ALL_CLASSES:
        raise UserError(
            f"--force-all-classes {force_all_classes!r}: choose no, train, validate or both"
        )
    if seed < 0:
        raise UserError(f"--seed {seed}: give 0 or a positive whole number")
    if not 0.0 <= val_fraction <= 0.99:
        raise UserError(f"--val-fraction {val_fraction}: give a fraction from 0 to 0.99")
    output = Path(output)
    if not dry_run:  # before the scan; once the crops are known, it is checked against them too
        check_output_file(output, "--output", overwrite=overwrite)
    found = make_datasplit(
        search_path,
        _names(classes, "--classes"),
        raw=raw,
        val_fraction=val_fraction,
        datasets=_names(datasets, "--datasets"),
        crops=_names(crops, "--crops"),
        scale=_scale(scale),
        force_all_classes=force_all_classes,  # type: ignore[arg-type]
        seed=seed,
    )
    if dry_run:
        return DatasplitResult(found, None)
    write_datasplit(found.rows, output, overwrite=overwrite)
    return DatasplitResult(found, output)


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"{option}: give at least one name")
    return names


def _scale(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--scale {text!r}: give one number or three (Z,Y,X) in nm") from None
    if len(values) not in (1, 3) or not all(math.isfinite(v) and v > 0 for v in values):
        raise UserError(f"--scale {text!r}: give one positive number or three (Z,Y,X) in nm")
    return values * 3 if len(values) == 1 else values


@dataclass
class CropsResult:
    """The arrays :func:`predict_crops` wrote."""

    output: Path
    manifest: Path
    crops: int = 0
    arrays: int = 0
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        for note in self.skipped:
            yield Text.from_markup("[yellow]skipped[/] ").append(note)
        for note in self.notes:
            yield Text.from_markup("[yellow]note[/] ").append(note)
        yield Text.from_markup("[green]✓[/] ").append(
            f"{self.arrays} arrays of {self.crops} crops in {self.output}; pack them with: "
            f"bioim2im cellmap pack {self.output} --crops {self.manifest} -o submission.zip"
        )


def predict_crops(
    model: Annotated[ModelSource, Arg(MODEL_HELP)],
    *,
    crops: Annotated[
        str | Path,
        Opt(
            "The test-crop manifest (test_crop_manifest.csv); writes crop<N>/<class> arrays for "
            "`bioim2im cellmap pack`."
        ),
    ],
    raw: Annotated[
        str,
        Opt(
            "Each dataset's raw data, with {dataset}, e.g. "
            "'data/{dataset}/{dataset}.zarr/recon-1/em/fibsem-uint8' (or an s3:// URL)."
        ),
    ],
    output: Annotated[str | Path, Opt("The zarr group to write.", ("--output", "-o"))],
    only: Annotated[
        str | None,
        Opt("Predict only these crops of the manifest, comma-separated (e.g. 7,crop11)."),
    ] = None,
    overrides: Overrides = (),
    overwrite: Annotated[bool, Opt("Replace an earlier output of this command.")] = False,
    trust_model: TrustModel = False,
    cluster: Annotated[
        str | None,
        Opt(
            "Predict the crops on a Dask cluster, one crop a task: WHERE as for `bioim2im "
            "predict --cluster` (tcp://HOST:PORT, local[:N], slurm, lsf, pbs; --set cluster.*). "
            "A run stopped midway starts over.",
            metavar="WHERE",
        ),
    ] = None,
    report: Annotated[Callable[[str], None] | None, PythonOnly()] = None,
) -> CropsResult:
    """Predict the CellMap test crops into the challenge's layout (crop<N>/<class>).

    ``report`` is told each line of progress (default: printed to stderr): each crop
    predicted, and with ``cluster`` the Dask scheduler and its dashboard. ``cluster`` predicts
    the crops as tasks of a Dask cluster, one crop a task, as ``predict --cluster`` does."""
    from bioim2im_cellmap.prediction import predict_crops as run

    done = run(
        model,
        crops,
        raw,
        output,
        overrides=overrides,
        overwrite=overwrite,
        report=report or (lambda line: print(line, file=sys.stderr, flush=True)),
        trust_model=trust_model,
        only=_names(only, "--only") if only else None,
        cluster=cluster,
    )
    return CropsResult(done.output, Path(crops), done.crops, done.arrays, done.skipped, done.notes)


@dataclass
class PackResult:
    """A submission zip written (or, with ``check``, a submission checked)."""

    path: Path
    manifest: Path
    arrays: int = 0
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked_only: bool = False
    error: UserError | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        if self.error is not None:
            return
        if self.checked_only:
            yield Text.from_markup("[green]✓[/] ").append(
                f"{self.path} is a valid submission for {self.manifest}"
            )
            return
        for note in self.missing:
            yield Text.from_markup("[yellow]missing[/] ").append(note)
        for note in self.warnings:
            yield Text.from_markup("[yellow]warning[/] ").append(note)
        yield Text.from_markup("[green]✓[/] ").append(
            f"{self.path}: {self.arrays} arrays, checked against {self.manifest}"
        )


def pack(
    predictions: Annotated[
        str | Path,
        Arg(
            "A zarr group of crop<N>/<class> predictions (e.g. from `bioim2im cellmap "
            "predict`), or a path with {dataset} and {crop} (crop<N>) in it, as the toolbox's "
            "packer takes them (e.g. 'processed/{dataset}.zarr/{crop}'), or with --check a "
            "submission zip.",
            metavar="PREDICTIONS",
        ),
    ],
    *,
    crops: Annotated[str | Path, Opt("The test-crop manifest (test_crop_manifest.csv).")],
    output: Annotated[str | Path, Opt("The submission zip.", ("--output", "-o"))] = Path(
        "submission.zip"
    ),
    check: Annotated[bool, Opt("Only check the zip PREDICTIONS; write nothing.")] = False,
    allow_missing: Annotated[
        bool, Opt("Pack even when crops or classes are missing (scored as empty).")
    ] = False,
    overwrite: Annotated[bool, Opt("Replace an existing zip.")] = False,
) -> PackResult:
    """Write the CellMap submission zip and check it; every problem is named (exit 2 if any)."""
    from bioim2im_cellmap.submission import check_submission
    from bioim2im_cellmap.submission import pack as pack_submission

    if check:
        problems = check_submission(predictions, crops, required=not allow_missing)
        if problems:
            noun = "problem" if len(problems) == 1 else "problems"
            raise UserError(f"{predictions}: {len(problems)} {noun}:", problems)
        return PackResult(Path(predictions), Path(crops), checked_only=True)
    done = pack_submission(
        predictions, crops, output, overwrite=overwrite, allow_missing=allow_missing
    )
    return PackResult(done.path, Path(crops), done.arrays, done.missing, done.warnings)


def evaluate(
    pred: Annotated[
        str | Path, Opt("The submission: a zip or a zarr group of crops.", ("--pred", "-p"))
    ],
    truth: Annotated[
        str | Path, Opt("The ground truth: a zarr group of crop<N> groups.", ("--truth", "-t"))
    ],
    *,
    head: Annotated[str | None, PythonOnly()] = None,
    json_path: Annotated[
        str | Path | None,
        Opt("Write the overall, per-class and per-crop scores as JSON.", ("--json",)),
    ] = None,
    csv_path: Annotated[str | Path | None, PythonOnly()] = None,
    alignment: Annotated[
        str,
        Opt(
            "How submitted arrays are placed on the crops: 'challenge' as the challenge's "
            "evaluator does (the leaderboard's number), or 'physical' where their voxels "
            "physically are (sub-voxel exact; not the leaderboard's number)."
        ),
    ] = "challenge",
    overwrite: Annotated[bool, Opt("Replace an existing --json file.")] = False,
) -> Any:
    """Score a CellMap submission as the challenge does; a single prediction file against one
    truth file is scored as one class (named after ``head``)."""
    from bioim2im_cellmap.evaluation import evaluate_submission, is_truth_store

    if is_truth_store(truth):
        if csv_path is not None:
            raise UserError("--csv does not apply to a CellMap submission; use --json")
        return evaluate_submission(
            pred, truth, alignment=alignment, json_path=json_path, overwrite=overwrite
        )
    from bioim2im_cellmap.evaluation import evaluate_one_class

    return evaluate_one_class(
        pred, truth, head=head, json_path=json_path, csv_path=csv_path, overwrite=overwrite
    )


@dataclass
class ProcessResult:
    """What :func:`process` wrote."""

    output: Path
    arrays: int
    chain: list[str]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        yield Text.from_markup("[green]✓[/] ").append(
            f"{self.arrays} arrays through [{', '.join(self.chain)}] in {self.output}"
        )


def process(
    model: Annotated[ModelSource, Arg(MODEL_HELP)],
    *,
    inputs: Annotated[
        str | Path,
        Opt(
            "Crop predictions: a zarr group of crop<N>/<class> arrays (e.g. from `bioim2im "
            "cellmap predict`).",
            ("--input", "-i"),
        ),
    ],
    output: Annotated[str | Path, Opt("The zarr group to write.", ("--output", "-o"))],
    overrides: Overrides = (),
    head: Annotated[str | None, Opt("The head whose chain runs (needed with several).")] = None,
    block: Annotated[int, Opt("Block size (voxels per axis).")] = 64,
    overwrite: Annotated[
        bool, Opt("Replace an earlier output of cellmap predict or process.")
    ] = False,
    trust_model: TrustModel = False,
    report: Annotated[Callable[[str], None] | None, PythonOnly()] = None,
) -> ProcessResult:
    """Run a head's postprocessing chain (thresholds, size filters, watershed...) over crop
    predictions, block by block; the steps they already went through are skipped."""
    from bioim2im_cellmap.process import process_crops

    done = process_crops(
        model,
        inputs,
        output,
        overrides=overrides,
        head=head,
        block=block,
        overwrite=overwrite,
        trust_model=trust_model,
        report=report or (lambda line: print(f"processed {line}", file=sys.stderr, flush=True)),
    )
    return ProcessResult(done.output, done.arrays, done.chain)


@dataclass
class ViewResult:
    """A neuroglancer viewer that was served (and, from the command line, closed)."""

    url: str
    layers: list[str]
    shown: Any = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        yield Text(f"served {len(self.layers)} layers ({', '.join(self.layers)}) at {self.url}")


def view(
    *,
    raw: Annotated[
        str | None,
        Opt(
            "The raw data: a multiscale group or array (e.g. DATASET.zarr/recon-1/em/fibsem-uint8)."
        ),
    ] = None,
    labels: Annotated[
        Sequence[str],
        Opt(
            "Labels: a crop group (each class a layer), a class's array or multiscale group, "
            "truth or predictions (repeatable).",
            ("--labels", "-l"),
        ),
    ] = (),
    bind: Annotated[str, Opt("The address the viewer's server listens on.")] = "127.0.0.1",
    port: Annotated[int, Opt("Its port (0: any free one).")] = 0,
    wait: Annotated[bool, PythonOnly()] = True,
) -> ViewResult:
    """Show raw data, ground truth and predictions of crops in neuroglancer (its local server,
    each layer at its voxel size and offset); prints the URL and serves until Enter."""
    from bioim2im_cellmap.view import stop
    from bioim2im_cellmap.view import view as serve

    shown = serve(
        raw,
        labels,
        bind=bind,
        port=port,
        report=lambda url: print(f"neuroglancer viewer at {url}", file=sys.stderr, flush=True),
    )
    if wait:
        print("press Enter to stop the viewer", file=sys.stderr, flush=True)
        with contextlib.suppress(EOFError, KeyboardInterrupt):
            input()
        stop()
    return ViewResult(shown.url, list(shown.layers), shown)
