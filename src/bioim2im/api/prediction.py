"""Prediction: an image in memory (:func:`predict`), image files of any size
(:func:`predict_files`), and a head's postprocessing over saved predictions
(:func:`postprocess`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from bioim2im.api.options import Arg, ModelSource, Opt, Overrides, PythonOnly, TrustModel
from bioim2im.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console, ConsoleOptions, RenderResult

    from bioim2im.io.base import LazyImage
    from bioim2im.prediction.job import PredictionSummary

CLUSTER_HELP = (
    "Predict on a Dask cluster: a scheduler's address (tcp://HOST:PORT), local[:N] (N worker "
    "processes here), or slurm, lsf, pbs (batch jobs of workers, --set cluster.queue=... etc., "
    "see `bioim2im options cluster`); needs the cluster extra. A run submitted again skips "
    "the blocks done."
)

MODEL_HELP = (
    "A run directory, a checkpoint, a bioimage.io package (zip, folder or rdf.yaml), an ONNX or "
    "TorchScript file, or the https:// URL of one (--set predict.roi_size=[...] when it was not "
    "exported by bioim2im)."
)


def predict(
    model: ModelSource,
    image: np.ndarray | LazyImage,
    *,
    axes: str | None = None,
    overrides: Overrides = (),
    device: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    trust_model: bool = False,
) -> dict[str, np.ndarray]:
    """Predict one image and return each head's postprocessed output.

    ``image`` is an array, or any lazy image (e.g. ``bioim2im.io.open_image(path)``), which is
    read block by block. ``axes`` name an array's axes (letters of ``TCZYX``; default: guessed
    from its shape as for files). Each output is shaped ``(T, C, Z, Y, X)`` without the axes
    the input lacks (C is always there), in the head's output dtype. ``device`` defaults to the
    GPU when there is one. ``on_progress(done, total)`` is told each block predicted (an array
    is one block; a lazy image is read in several); an exception it raises stops the
    prediction and is raised here. ``model`` may be a run, a checkpoint, a model file or
    package, or its ``https://`` URL; ``trust_model`` runs a TorchScript graph from elsewhere
    that holds more than tensor operations (see the README's security model).
    """
    from bioim2im.formats import load_model
    from bioim2im.prediction.job import predict_in_memory

    chosen = device or _default_device()
    return predict_in_memory(
        load_model(model, overrides, chosen, trust_model=trust_model),
        image,
        axes=axes,
        on_progress=on_progress,
    )


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def predict_files(
    model: Annotated[ModelSource, Arg(MODEL_HELP)],
    inputs: Annotated[
        str | Path, Opt("An image, a glob, a folder or a CSV manifest.", ("--input", "-i"))
    ],
    output: Annotated[str | Path, Opt("Folder for the predictions.", ("--output", "-o"))],
    *,
    overrides: Overrides = (),
    format: Annotated[str | None, Opt("ome-zarr (default) or tiff.")] = None,
    overwrite: Annotated[bool, Opt("Replace existing outputs.")] = False,
    devices: Annotated[int | None, Opt("Predict with N processes (GPUs) via torchrun.")] = None,
    progress: Annotated[bool, PythonOnly()] = True,
    split: Annotated[
        str | None,
        Opt(
            "A CSV manifest with a split column: predict these rows (train, val, test or all); "
            "default test."
        ),
    ] = None,
    part: Annotated[
        str | None,
        Opt(
            "K/N: predict the K-th of N shares of every image, as one of N independent jobs "
            "(e.g. a SLURM array); the last part to finish publishes the outputs."
        ),
    ] = None,
    finalize: Annotated[
        bool, Opt("Finish and publish what the --part jobs predicted (no prediction).")
    ] = False,
    on_progress: Annotated[Callable[[int, int], None] | None, PythonOnly()] = None,
    trust_model: TrustModel = False,
    cluster: Annotated[str | None, Opt(CLUSTER_HELP, metavar="WHERE")] = None,
) -> PredictionSummary:
    """Predict images of any size block by block; resumes where a killed run stopped.

    Image files (one image, a glob, a folder or a CSV manifest) are predicted into ``output``.
    Memory depends on the block size, not on the image size; a killed run resumes where it
    stopped when the same call is made again. ``format`` (``ome-zarr`` or ``tiff``) overrides
    ``predict.format``; ``overwrite`` replaces existing outputs; ``devices=N`` (N > 1) runs N
    processes under torchrun; ``progress`` shows a progress bar (plain lines when stderr is not
    a terminal). A CSV manifest with a split column (``data.split_column``) stands for its
    ``test`` rows unless ``split`` names others (``train``, ``val``, or ``all`` rows).
    ``part="K/N"`` predicts one of N independent shares (cluster jobs without torchrun) and
    ``finalize`` publishes what the parts predicted. ``on_progress(done, total)`` is told each
    block of the image being predicted; an exception it raises stops the prediction (the same
    call later continues it) and is raised here. ``trust_model`` runs a TorchScript graph
    from elsewhere that holds more than tensor operations (see the README's security model).
    ``cluster`` predicts the blocks as tasks of a Dask cluster: a scheduler's address,
    ``local[:N]`` or ``slurm``/``lsf``/``pbs`` (see :mod:`bioim2im.prediction.cluster`).
    """
    from bioim2im.prediction.job import predict_files as run

    if devices is not None and devices < 1:
        raise UserError(f"--devices {devices}: give 1 or more")
    return run(
        model, inputs, output, overrides=overrides, format=format, overwrite=overwrite,
        devices=devices, progress=progress, split=split, part=part, finalize=finalize,
        on_progress=on_progress, trust_model=trust_model, cluster=cluster,
    )  # fmt: skip


@dataclass
class PostprocessResult:
    """What :func:`postprocess` wrote."""

    outputs: list[Path]
    table: Path
    output: Path
    resumed_blocks: int = 0
    blocks: int = 0

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        yield Text.from_markup(
            f"[green]✓[/] {len(self.outputs)} output(s) in {self.output} ({self.table.name})"
        )


def postprocess(
    model: Annotated[str | Path, Arg("The run directory (or checkpoint).")],
    inputs: Annotated[
        str | Path,
        Opt(
            "Saved predictions: a predict output folder (its predictions.csv says which steps "
            "each went through), or image files of one head's raw output.",
            ("--input", "-i"),
        ),
    ],
    output: Annotated[str | Path, Opt("Folder for the results.", ("--output", "-o"))],
    *,
    overrides: Overrides = (),
    heads: Annotated[
        Sequence[str],
        Opt(
            "Only this head (repeatable); needed for files of a run with several heads.",
            ("--head",),
        ),
    ] = (),
    format: Annotated[str | None, Opt("ome-zarr (default) or tiff.")] = None,
    overwrite: Annotated[bool, Opt("Replace existing outputs.")] = False,
    report: Annotated[Callable[[str], None] | None, PythonOnly()] = None,
    cluster: Annotated[str | None, Opt(CLUSTER_HELP, metavar="WHERE")] = None,
) -> PostprocessResult:
    """Run a head's postprocessing over saved predictions, without the network: try thresholds
    or watershed settings on a large volume; block by block, resumable.

    ``report`` is told each line of progress (default: printed to stderr). ``cluster`` runs
    the blocks as tasks of a Dask cluster, as for :func:`predict_files`."""
    from bioim2im.prediction.postprocess import postprocess_files

    summary = postprocess_files(
        model,
        inputs,
        output,
        overrides=overrides,
        heads=heads,
        format=format,
        overwrite=overwrite,
        report=report or _say,
        cluster=cluster,
    )
    return PostprocessResult(
        summary.outputs, summary.table, Path(output), summary.resumed_blocks, summary.blocks
    )


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
