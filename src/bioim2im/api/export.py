"""Export: a trained model in the formats other tools read (:func:`export`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from bioim2im.api.options import Arg, Opt, Overrides
from bioim2im.errors import UserError

if TYPE_CHECKING:
    from bioim2im.formats.export import ExportResult


def export(
    model: Annotated[str | Path, Arg("A run directory or a checkpoint file.")],
    format: Annotated[
        str, Opt("bioimageio (a model package), torchscript or onnx.", ("--format", "-f"))
    ],
    *,
    output: Annotated[
        str | Path | None,
        Opt("Where to write it (default: <run name>.zip/.pt/.onnx here).", ("--output", "-o")),
    ] = None,
    heads: Annotated[
        Sequence[str], Opt("Export this head (repeatable; default: all heads).", ("--head",))
    ] = (),
    folder: Annotated[bool, Opt("bioimageio: write a folder instead of a zip.")] = False,
    test_image: Annotated[
        str | Path | None,
        Opt(
            "bioimageio: the image test tensors are cut from (default: a validation image of "
            "the run)."
        ),
    ] = None,
    name: Annotated[str | None, Opt("The model's name (export.name).")] = None,
    description: Annotated[str | None, Opt("What the model does (export.description).")] = None,
    authors: Annotated[
        Sequence[str], Opt("An author's name (repeatable; export.authors).", ("--author",))
    ] = (),
    license: Annotated[str | None, Opt("SPDX license id of the weights (export.license).")] = None,
    cite: Annotated[
        str | None, Opt("A reference's text (export.cite; with --doi or --url).")
    ] = None,
    doi: Annotated[str | None, Opt("The DOI of --cite.")] = None,
    url: Annotated[
        str | None, Opt("The URL of --cite (not checked: the export is offline).")
    ] = None,
    tags: Annotated[Sequence[str], Opt("A keyword (repeatable; export.tags).", ("--tag",))] = (),
    overrides: Overrides = (),
    overwrite: Annotated[bool, Opt("Replace an existing output.")] = False,
) -> ExportResult:
    """Share a trained model: a bioimage.io package (tested with bioimageio.core, offline), or
    the network as TorchScript or ONNX (checked against the network). Nothing is written unless
    every check passes.

    ``model`` is a run directory (its best checkpoint) or a checkpoint; ``format`` is
    ``bioimageio`` (a model package, a zip or with ``folder`` a folder), ``torchscript`` or
    ``onnx`` (one graph, one output per head). ``heads`` picks heads (default all); the
    metadata options (``name``, ``description``, ``authors``, ``license``, ``cite`` with
    ``doi`` or ``url``, ``tags``) set the preset's ``export`` keys, as ``overrides`` may (e.g.
    ``export.license=MIT``); ``test_image`` is the image the package's test tensors are cut
    from (default: one of the run's validation images)."""
    from bioim2im.formats.export import export_model

    metadata = list(overrides)
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
        metadata.append(f"export.tags={json.dumps(list(tags))}")
    return export_model(
        model, format, output=output, heads=heads, folder=folder, overrides=metadata,
        test_image=test_image, overwrite=overwrite,
    )  # fmt: skip
