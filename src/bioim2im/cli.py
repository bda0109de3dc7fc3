"""The `bioim2im` command line: parse, call the Python API, render. Heavy imports stay inside
the commands so that `--help` and `--version` answer at once."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from bioim2im import __version__
from bioim2im.errors import UserError, describe_os_error, os_error_cause
from bioim2im.plugin.hookspecs import KIND_NAMES

if TYPE_CHECKING:
    from rich.console import Console

    from bioim2im.api import TrainResult

app = typer.Typer(
    name="bioim2im",
    help="Train and run image-to-image deep-learning models for microscopy.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)

SetOption = Annotated[
    Optional[list[str]],  # noqa: UP045 (typer reads the annotation at run time)
    typer.Option(
        "--set",
        "-s",
        metavar="KEY.PATH=VALUE",
        help="Override a preset key; VALUE is read as TOML (numbers, true, [1, 2], {a = 1}) "
        "or else as a bare string. Repeatable; later ones win.",
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"bioim2im {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Train and run image-to-image deep-learning models for microscopy."""


@app.command("list-plugins")
def list_plugins(
    kind: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--kind",
            "-k",
            help=f"Only this kind: {', '.join(KIND_NAMES)}.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
    params: Annotated[
        bool,
        typer.Option("--params", help="Also each component's parameters: type, default, meaning."),
    ] = False,
) -> None:
    """List every registered component with the package that provides it."""
    import json

    from bioim2im.plugin.manager import get_registry
    from bioim2im.plugin.registry import suggest

    if params:
        _list_parameters(kind, as_json)
        return

    if kind is not None and kind not in KIND_NAMES:
        raise UserError(
            f"--kind {kind!r} is not a component kind{suggest(kind, KIND_NAMES)} (valid: {', '.join(KIND_NAMES)})"
        )
    rows = [
        {
            "kind": c.kind,
            "name": c.name,
            "package": c.package,
            "version": c.version,
            "description": c.description,
        }
        for c in get_registry()
        if kind is None or c.kind == kind
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(
        "kind", "name", "package", "version", "description", box=None, header_style="bold"
    )
    for row in rows:
        table.add_row(*(row[k] for k in ("kind", "name", "package", "version", "description")))
    _console().print(table)


def _list_parameters(kind: str | None, as_json: bool) -> None:
    import json

    from bioim2im.config.reference import parameter_options
    from bioim2im.plugin.manager import get_registry
    from bioim2im.plugin.registry import suggest

    if kind is not None and kind not in KIND_NAMES:
        raise UserError(
            f"--kind {kind!r} is not a component kind{suggest(kind, KIND_NAMES)} (valid: {', '.join(KIND_NAMES)})"
        )
    components = [c for c in get_registry() if kind is None or c.kind == kind]
    if as_json:
        rows = [
            {
                "kind": c.kind,
                "name": c.name,
                "package": c.package,
                "version": c.version,
                "description": c.description,
                "params": [o.to_json() for o in parameter_options(c)],
            }
            for c in components
        ]
        print(json.dumps(rows, indent=2))
        return
    console = _console()
    for component in components:
        _print_component(console, component, parameter_options(component))


def _print_component(console: Console, component: Any, options: list[Any]) -> None:
    from rich.markup import escape

    console.print(
        f"[bold]{component.kind} {escape(component.name)}[/] ({component.package} "
        f"{component.version}): {escape(component.description)}",
        highlight=False,
    )
    if not options:
        console.print("    no parameters", highlight=False)
    for option in options:
        console.print(f"    {_option_line(option)}", highlight=False)


def _option_line(option: Any) -> str:
    from rich.markup import escape

    default = f" = {option.default}" if option.default else ""
    described = f"\n        {option.description}" if option.description else ""
    return escape(f"{option.key}: {option.type}{default}{described}")


@app.command()
def options(
    section: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(
            help="Only the keys under this one, e.g. train, data.cellmap, model.heads.seg.loss; "
            "a key naming a component (model.backbone) also lists each one's parameters.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Every preset key with its type, default and meaning, from the schema itself."""
    import json

    from bioim2im.config.reference import find_options, parameter_options
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    found = find_options(registry, section)
    # A key naming a component: each registered one of that kind, with its parameters.
    kinds = [o.kind for o in found if o.kind is not None and section is not None]
    kind = kinds[0] if len(found) == 1 and kinds else None
    components = [c for c in registry if c.kind == kind]
    if as_json:
        print(
            json.dumps(
                {
                    "options": [o.to_json() for o in found],
                    "components": [
                        {
                            "kind": c.kind,
                            "name": c.name,
                            "package": c.package,
                            "description": c.description,
                            "params": [o.to_json() for o in parameter_options(c)],
                        }
                        for c in components
                    ],
                },
                indent=2,
            )
        )
        return
    console = _console()
    for option in found:
        console.print(_option_line(option), highlight=False)
    if components:
        console.print(f"\n[bold]Each {kind} and its parameters:[/]", highlight=False)
    for component in components:
        _print_component(console, component, parameter_options(component))


@app.command()
def schema(
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--output", "-o", help="Write it to this file (default: print it)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --output file.")
    ] = False,
) -> None:
    """A JSON Schema of preset files, with every installed component, for editors: save it and
    start a preset with the line  #:schema ./bioim2im-preset.schema.json"""
    import json

    from bioim2im.config.reference import json_schema
    from bioim2im.plugin.manager import get_registry

    text = json.dumps(json_schema(get_registry()), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    if output.is_dir():
        raise UserError(
            f"--output {output} is a directory; give a file name, e.g. "
            f"{output}/bioim2im-preset.schema.json"
        )
    if not output.parent.is_dir():
        raise UserError(f"--output {output}: {output.parent} is not a folder")
    from bioim2im.io.atomic import check_output_file, write_text

    check_output_file(output, "--output", overwrite=overwrite)  # it reads no file of yours
    write_text(output, text)
    _console(stderr=True).print(f"[green]✓[/] {output}", highlight=False)


presets_app = typer.Typer(
    help="The presets you can name: shipped ones and those of installed plugins.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(presets_app, name="presets")


@presets_app.callback()
def presets(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
) -> None:
    """List every preset by name with its description and the package that provides it;
    `bioim2im presets show NAME` prints one resolved."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    from bioim2im.config.reference import preset_rows
    from bioim2im.plugin.manager import get_registry

    rows = preset_rows(get_registry())
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("name", "description", "package", box=None, header_style="bold")
    for row in rows:
        table.add_row(row["name"], row["description"], f"{row['package']} {row['version']}")
    _console().print(table)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="A preset's name.", show_default=False)],
    overrides: SetOption = None,
    as_written: Annotated[
        bool,
        typer.Option("--as-written", help="The file as it is, not resolved (extends kept)."),
    ] = False,
) -> None:
    """Print a preset resolved (its extends merged, every default filled in): save it, change
    it, and train it by path."""
    from bioim2im.config.reference import show_preset
    from bioim2im.plugin.manager import get_registry

    sys.stdout.write(show_preset(name, get_registry(), overrides or [], as_written=as_written))


@app.command()
def check(
    preset: Annotated[
        str,
        typer.Argument(help="A preset TOML file or a preset's name.", show_default=False),
    ],
    overrides: SetOption = None,
    data: Annotated[
        bool, typer.Option("--data", help="Also scan the dataset the preset names.")
    ] = False,
) -> None:
    """Validate a preset without training and print it fully resolved (exit 0 valid, 2 not)."""
    from bioim2im.config import load_preset, to_toml

    resolved = load_preset(preset, overrides or [])
    if data:
        from bioim2im.data.preflight import ensure_usable, preflight, render_report

        report = preflight(resolved)
        render_report(report, _console(stderr=True))
        ensure_usable(report)
    sys.stdout.write(to_toml(resolved))
    _console(stderr=True).print(f"[green]✓[/] {preset} is valid", highlight=False)


@app.command()
def train(
    preset: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(
            help="A preset TOML file or a preset's name (not with --resume).", show_default=False
        ),
    ] = None,
    overrides: SetOption = None,
    run_dir: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--run-dir", "-o", help="Where the run is written (default runs/<preset>-<time>)."
        ),
    ] = None,
    resume: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--resume", help="Continue the run in this directory from its last checkpoint."
        ),
    ] = None,
    devices: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--devices", min=1, help="Train with N processes (GPUs) on this machine via torchrun."
        ),
    ] = None,
) -> None:
    """Train a model from a preset; writes checkpoints, metrics and snapshots to a run directory."""
    from bioim2im import api

    result = api.train(
        preset, overrides=overrides or [], run_dir=run_dir, resume=resume, devices=devices
    )
    _print_result(result)


@app.command()
def predict(
    model: Annotated[
        str,
        typer.Argument(
            help="A run directory, a checkpoint, a bioimage.io package (zip, folder or rdf.yaml), "
            "or an ONNX or TorchScript file (--set predict.roi_size=[...] when it was not "
            "exported by bioim2im); a package zip, ONNX or TorchScript file may be an "
            "http(s):// URL.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the predictions.", show_default=False)
    ],
    inputs: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--input",
            "-i",
            help="An image, a glob, a folder or a CSV manifest.",
            show_default=False,
        ),
    ] = None,
    crops: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--crops",
            help="CellMap: the test-crop manifest (test_crop_manifest.csv); writes crop<N>/<class> "
            "arrays for `bioim2im pack`.",
        ),
    ] = None,
    raw: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--raw",
            help="CellMap: each dataset's raw data, with {dataset}, e.g. "
            "'data/{dataset}/{dataset}.zarr/recon-1/em/fibsem-uint8' (or an s3:// URL).",
        ),
    ] = None,
    overrides: SetOption = None,
    output_format: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--format", help="ome-zarr (default) or tiff."),
    ] = None,
    devices: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--devices", min=1, help="Predict with N processes (GPUs) via torchrun."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs.")
    ] = False,
    split: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--split",
            help="A CSV manifest with a split column: predict these rows (train, val, test or "
            "all); default test.",
        ),
    ] = None,
    part: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--part",
            help="K/N: predict the K-th of N shares of every image, as one of N independent "
            "jobs (e.g. a SLURM array); the last part to finish publishes the outputs.",
        ),
    ] = None,
    finalize: Annotated[
        bool,
        typer.Option(
            "--finalize", help="Finish and publish what the --part jobs predicted (no prediction)."
        ),
    ] = False,
    trust_model: Annotated[
        bool,
        typer.Option(
            "--trust-model",
            help="Run a TorchScript model from elsewhere even when it holds more than tensor "
            "operations (it may then read and write files): only for models you trust.",
        ),
    ] = False,
) -> None:
    """Predict images of any size block by block; resumes where a killed run stopped."""
    if crops is not None or raw is not None:
        if part is not None or finalize:
            raise UserError("--part and --finalize do not apply to CellMap test crops (--crops)")
        if output_format is not None or devices is not None or split is not None:
            raise UserError(
                "--format, --devices and --split do not apply to CellMap test crops (--crops)"
            )
        _predict_crops(model, crops, raw, output, overrides or [], overwrite, inputs, trust_model)
        return
    if inputs is None:
        raise UserError(
            "give the images to predict with --input (or CellMap test crops with --crops)"
        )
    from bioim2im import api
    from bioim2im.prediction.display import render_summary

    summary = api.predict_files(
        model,
        inputs,
        output,
        overrides=overrides or [],
        format=output_format,
        overwrite=overwrite,
        devices=devices,
        split=split,
        part=part,
        finalize=finalize,
        trust_model=trust_model,
    )
    render_summary(summary, _console(stderr=True))


def _predict_crops(
    model: str,
    crops: Path | None,
    raw: str | None,
    output: Path,
    overrides: list[str],
    overwrite: bool,
    inputs: str | None,
    trust_model: bool,
) -> None:
    if crops is None or raw is None:
        raise UserError("CellMap prediction needs both --crops MANIFEST and --raw PATTERN")
    if inputs is not None:
        raise UserError("give either --input (images) or --crops (CellMap test crops), not both")
    from bioim2im.prediction.cellmap import predict_crops

    console = _console(stderr=True)
    result = predict_crops(
        model,
        crops,
        raw,
        output,
        overrides=overrides,
        overwrite=overwrite,
        report=lambda line: console.print(f"predicted {line}", highlight=False),
        trust_model=trust_model,
    )
    for note in result.skipped:
        console.print(f"[yellow]skipped[/] {note}", highlight=False)
    console.print(
        f"[green]✓[/] {result.arrays} arrays of {result.crops} crops in {result.output}; "
        f"pack them with: bioim2im pack {result.output} --crops {crops} -o submission.zip",
        highlight=False,
    )


@app.command()
def export(
    model: Annotated[
        Path, typer.Argument(help="A run directory or a checkpoint file.", show_default=False)
    ],
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="bioimageio (a model package), torchscript or onnx.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--output", "-o", help="Where to write it (default: <run name>.zip/.pt/.onnx here)."
        ),
    ] = None,
    heads: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--head", help="Export this head (repeatable; default: all heads)."),
    ] = None,
    folder: Annotated[
        bool, typer.Option("--folder", help="bioimageio: write a folder instead of a zip.")
    ] = False,
    test_image: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--test-image",
            help="bioimageio: the image test tensors are cut from (default: a validation image "
            "of the run).",
        ),
    ] = None,
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--name", help="The model's name (export.name)."),
    ] = None,
    description: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--description", help="What the model does (export.description)."),
    ] = None,
    authors: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--author", help="An author's name (repeatable; export.authors)."),
    ] = None,
    license: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--license", help="SPDX license id of the weights (export.license)."),
    ] = None,
    cite: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--cite", help="A reference's text (export.cite; with --doi or --url)."),
    ] = None,
    doi: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--doi", help="The DOI of --cite."),
    ] = None,
    url: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--url", help="The URL of --cite (not checked: the export is offline)."),
    ] = None,
    tags: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--tag", help="A keyword (repeatable; export.tags)."),
    ] = None,
    overrides: SetOption = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output.")
    ] = False,
) -> None:
    """Share a trained model: a bioimage.io package (tested with bioimageio.core, offline), or
    the network as TorchScript or ONNX (checked against the network). Nothing is written unless
    every check passes."""
    import json

    from bioim2im import api

    metadata = list(overrides or [])
    for key, value in (("name", name), ("description", description), ("license", license)):
        if value is not None:
            metadata.append(f"export.{key}={json.dumps(value)}")
    if authors:
        listed = ", ".join(f"{{ name = {json.dumps(a)} }}" for a in authors)
        metadata.append(f"export.authors=[{listed}]")
    if cite is not None or doi is not None or url is not None:
        if cite is None or (doi is None and url is None):
            raise UserError("--cite needs the reference's text and its --doi or --url")
        entry = {"text": cite, **({"doi": doi} if doi else {}), **({"url": url} if url else {})}
        fields = ", ".join(f"{k} = {json.dumps(v)}" for k, v in entry.items())
        metadata.append(f"export.cite=[{{ {fields} }}]")
    if tags:
        metadata.append(f"export.tags={json.dumps(tags)}")
    result = api.export(
        model,
        output_format,
        output=output,
        heads=heads or [],
        folder=folder,
        overrides=metadata,
        test_image=test_image,
        overwrite=overwrite,
    )
    console = _console(stderr=True)
    for check in result.checks:
        console.print(f"[green]✓[/] {check}", highlight=False)
    console.print(
        f"[green]✓[/] {result.path} ({result.format}; heads {', '.join(result.heads)})",
        highlight=False,
    )


@app.command()
def evaluate(
    pred: Annotated[
        Path,
        typer.Option(
            "--pred", "-p", help="Prediction file, folder or zarr group.", show_default=False
        ),
    ],
    truth: Annotated[
        Path, typer.Option("--truth", "-t", help="Ground-truth file or folder.", show_default=False)
    ],
    task: Annotated[
        str,
        typer.Option(
            "--task", help="semantic, instance, regression, cellmap, or auto (from the data)."
        ),
    ] = "auto",
    head: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--head", help="Which head's predictions to score when there are several."),
    ] = None,
    json_path: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--json", help="Write per-image and aggregate metrics as JSON."),
    ] = None,
    csv_path: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--csv", help="Write one row per image plus an aggregate row as CSV."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing --json / --csv files.")
    ] = False,
) -> None:
    """Score predictions against ground truth; a table per image and overall.

    With --task cellmap and a truth that is a zarr group of crop<N> groups, scores a whole
    CellMap submission (zip or zarr) as the challenge does."""
    if task == "cellmap":
        from bioim2im.cellmap.evaluation import evaluate_submission, is_truth_store, render

        if is_truth_store(truth):
            if csv_path is not None:
                raise UserError("--csv does not apply to a CellMap submission; use --json")
            scores = evaluate_submission(pred, truth, json_path=json_path, overwrite=overwrite)
            render(scores, _console())
            return
    from bioim2im import api
    from bioim2im.evaluation import render_report

    report = api.evaluate(
        pred,
        truth,
        task=task,
        head=head,
        json_path=json_path,
        csv_path=csv_path,
        overwrite=overwrite,
    )
    render_report(report, _console())


@app.command()
def datasplit(
    search_path: Annotated[
        str,
        typer.Argument(
            help="Where the crops are, with {dataset} and {crop}, e.g. "
            "'data/{dataset}/{dataset}.zarr/recon-1/labels/groundtruth/{crop}' (or s3://...).",
            show_default=False,
        ),
    ],
    classes: Annotated[
        str,
        typer.Option(
            "--classes", "-c", help="Comma-separated classes, e.g. nuc,mito.", show_default=False
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The CSV to write.")] = Path(
        "datasplit.csv"
    ),
    raw: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--raw",
            help="Each dataset's raw data, with {dataset}; default: em/fibsem-uint8 beside the "
            "labels/groundtruth/{crop} of the search path.",
        ),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option("--val-fraction", min=0.0, max=0.99, help="Fraction of crops to validate on."),
    ] = 0.1,
    datasets: Annotated[
        str, typer.Option("--datasets", help="Comma-separated dataset names or globs.")
    ] = "*",
    crops: Annotated[
        str, typer.Option("--crops", help="Comma-separated crop names/numbers or globs.")
    ] = "*",
    scale: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--scale",
            help="Keep a class in a crop only if annotated at this voxel size (nm) or finer: "
            "8 or 8,8,8.",
        ),
    ] = None,
    force_all_classes: Annotated[
        str,
        typer.Option(
            "--force-all-classes",
            help="no, train, validate or both: crops lacking a class move out of that split "
            "(both: are left out).",
        ),
    ] = "no",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/validate split.")] = 0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be written; write nothing.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing CSV.")
    ] = False,
) -> None:
    """Write a CellMap datasplit CSV (the challenge toolbox's format) of the crops found."""
    from rich.table import Table

    from bioim2im.cellmap.datasplit import make_datasplit, write_datasplit

    if force_all_classes not in ("no", "train", "validate", "both"):
        raise UserError(
            f"--force-all-classes {force_all_classes!r}: choose no, train, validate or both"
        )
    if seed < 0:
        raise UserError(f"--seed {seed}: give 0 or a positive whole number")
    if not dry_run:  # before the scan; once the crops are known, it is checked against them too
        from bioim2im.io.atomic import check_output_file

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
    console = _console(stderr=True)
    table = Table("usage", "dataset", "crop", "classes", box=None, header_style="bold")
    for row in found.rows:
        table.add_row(row.usage, row.dataset, row.name, ", ".join(row.classes))
    console.print(table)
    for note in found.skipped:
        console.print(f"[yellow]left out[/] {note}", highlight=False)
    counts = {u: sum(r.usage == u for r in found.rows) for u in ("train", "validate")}
    summary = f"{counts['train']} train, {counts['validate']} validate crop(s)"
    if dry_run:
        console.print(f"dry run: {summary}; nothing written", highlight=False)
        return
    write_datasplit(found.rows, output, overwrite=overwrite)
    console.print(f"[green]✓[/] {output}: {summary}", highlight=False)


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"{option}: give at least one name")
    return names


def _scale(text: str | None) -> list[float] | None:
    import math

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--scale {text!r}: give one number or three (Z,Y,X) in nm") from None
    if len(values) not in (1, 3) or not all(math.isfinite(v) and v > 0 for v in values):
        raise UserError(f"--scale {text!r}: give one positive number or three (Z,Y,X) in nm")
    return values * 3 if len(values) == 1 else values


@app.command()
def pack(
    predictions: Annotated[
        Path,
        typer.Argument(
            help="A zarr group of crop<N>/<class> predictions (e.g. from predict --crops), or with "
            "--check a submission zip.",
            show_default=False,
        ),
    ],
    crops: Annotated[
        Path,
        typer.Option(
            "--crops", help="The test-crop manifest (test_crop_manifest.csv).", show_default=False
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The submission zip.")] = Path(
        "submission.zip"
    ),
    check_only: Annotated[
        bool, typer.Option("--check", help="Only check the zip PREDICTIONS; write nothing.")
    ] = False,
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing", help="Pack even when crops or classes are missing (scored as empty)."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing zip.")
    ] = False,
) -> None:
    """Write the CellMap submission zip and check it; every problem is named (exit 2 if any)."""
    from bioim2im.cellmap.submission import check_submission
    from bioim2im.cellmap.submission import pack as pack_submission

    console = _console(stderr=True)
    if check_only:
        problems = check_submission(predictions, crops, required=not allow_missing)
        if problems:
            noun = "problem" if len(problems) == 1 else "problems"
            raise UserError(f"{predictions}: {len(problems)} {noun}:", problems)
        console.print(
            f"[green]✓[/] {predictions} is a valid submission for {crops}", highlight=False
        )
        return
    result = pack_submission(
        predictions, crops, output, overwrite=overwrite, allow_missing=allow_missing
    )
    for note in result.missing:
        console.print(f"[yellow]missing[/] {note}", highlight=False)
    console.print(
        f"[green]✓[/] {result.path}: {result.arrays} arrays, checked against {crops}",
        highlight=False,
    )


@app.command()
def postprocess(
    model: Annotated[
        Path, typer.Argument(help="The run directory (or checkpoint).", show_default=False)
    ],
    inputs: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            help="Saved predictions: a predict output folder (its predictions.csv says which "
            "steps each went through), or image files of one head's raw output.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the results.", show_default=False)
    ],
    overrides: SetOption = None,
    heads: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--head",
            help="Only this head (repeatable); needed for files of a run with several heads.",
        ),
    ] = None,
    output_format: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--format", help="ome-zarr (default) or tiff."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs.")
    ] = False,
) -> None:
    """Run a head's postprocessing over saved predictions, without the network: try thresholds
    or watershed settings on a large volume; block by block, resumable."""
    from bioim2im.prediction.postprocess import postprocess_files

    console = _console(stderr=True)
    summary = postprocess_files(
        model,
        inputs,
        output,
        overrides=overrides or [],
        heads=heads or [],
        format=output_format,
        overwrite=overwrite,
        report=lambda line: console.print(line, highlight=False),
    )
    console.print(
        f"[green]✓[/] {len(summary.outputs)} output(s) in {output} ({summary.table.name})",
        highlight=False,
    )


@app.command()
def demo(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Folder for the demo's data, run and predictions."),
    ] = Path("bioim2im-demo"),
    minutes: Annotated[
        float, typer.Option("--minutes", min=0.1, help="Training time budget.")
    ] = 2.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier demo folder.")
    ] = False,
) -> None:
    """Synthetic nuclei -> train a 2D segmentation model -> predict held-out images -> evaluate."""
    from bioim2im.demo import run_demo

    run_demo(output, minutes=minutes, overwrite=overwrite, console=_console(stderr=True))


def _print_result(result: TrainResult) -> None:
    from rich.table import Table

    rows: dict[str, object] = {
        "run_dir": result.run_dir,
        "step": f"{result.step}/{result.total_steps}",
        "stopped": result.stop_reason,
        **result.metrics,
    }
    table = Table(title="trained", box=None, show_header=False)
    for key, value in rows.items():
        if value is not None:
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    _console(stderr=True).print(table)


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True)


def main() -> None:
    """Entry point: user errors become one message and exit status 2, never a traceback; what
    the machine refuses (disk full, permissions) one message and exit status 1."""
    usage_error, no_args = _click_usage_errors()
    try:
        code = app(standalone_mode=False)
    except no_args:
        sys.exit(2)  # the help was printed
    except usage_error as exc:
        # One line, like every other mistake, instead of a framed box.
        context: Any = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "bioim2im"
        _fail(f"{exc.format_message()} (see `{where} --help`)", 2)  # type: ignore[attr-defined]
    except UserError as exc:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        _fail(str(exc), exc.exit_code)
    except MemoryError:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        _fail(_NO_MEMORY, 1)
    except (OSError, RuntimeError) as exc:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        cause = os_error_cause(exc)
        if cause is not None:
            # A name too long or a loop of links is the path the user gave, not the machine.
            _fail(describe_os_error(cause), 2 if cause.errno in _PATH_ERRNOS else 1)
        if _out_of_memory(exc):
            _fail(f"{_NO_MEMORY} ({str(exc).strip().splitlines()[0]})", 1)
        raise
    except KeyboardInterrupt:
        if os.environ.get("BIOIM2IM_DEBUG"):
            raise
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP})


def _click_usage_errors() -> tuple[type[Exception], type[Exception]]:
    """The command-line parser's usage errors (typer vendors click in recent releases)."""
    import importlib

    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            errors = importlib.import_module(module)
        except ImportError:  # pragma: no cover (the other typer)
            continue
        return errors.UsageError, errors.NoArgsIsHelpError
    raise ImportError("typer's command-line parser is not installed")


_NO_MEMORY = (
    "not enough memory for these settings: use smaller sizes (data.patch_size, "
    "data.batch_size, the network's channels, predict.roi_size or predict.batch_size)"
)


def _out_of_memory(exc: BaseException) -> bool:
    """torch reports a failed allocation as a RuntimeError (OutOfMemoryError on GPUs)."""
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or any(
        words in text for words in ("can't allocate memory", "not enough memory", "out of memory")
    )


def _fail(message: str, exit_code: int) -> None:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
