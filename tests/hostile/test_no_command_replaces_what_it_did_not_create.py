"""No command deletes or replaces a path it did not create (issue 28).

Every command that writes is pointed at outputs that are the user's own files and folders, its
own inputs, or paths inside or around them. Each case records every pre-existing path's bytes
(files), kind (folders) and target (links) first; afterwards each must be as it was. A command
refused says so in one message (exit 2) and leaves the workspace exactly as it found it; a
command that runs may only add paths.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import (
    Workspace,
    assert_ok,
    assert_user_error,
    fingerprint,
    first_truth_of,
    invoke,
    lost_or_changed,
    make_workspace,
)


@pytest.fixture
def workspace(tmp_path: Path, trained_run: Path, nuclei_data: Path) -> Workspace:
    return make_workspace(tmp_path, trained_run, nuclei_data)


Args = Callable[[Workspace], list[str | Path]]


def _first_truth(w: Workspace) -> Path:
    return first_truth_of(w.truth)


# (id, arguments, what the one message names)
REFUSED: list[tuple[str, Args, str]] = [
    # train: a folder that is not a run, or the folder of the preset being trained
    (
        "train-into-a-user-folder",
        lambda w: ["train", w.preset, "--run-dir", w.user],
        "not a bioim2im run",
    ),
    (
        "train-into-the-presets-own-folder",
        lambda w: ["train", w.preset, "--run-dir", w.preset.parent],
        "tiny.toml",
    ),
    (
        "train-into-a-link-to-a-user-folder",
        lambda w: ["train", w.preset, "--run-dir", w["link-to-user"]],
        "not a bioim2im run",
    ),
    # predict: the output is the input's folder, the input, or the run
    (
        "predict-into-the-inputs-folder",
        lambda w: [
            "predict",
            w.run,
            "-i",
            w.zarr_folder / "img.ome.zarr",
            "-o",
            w.zarr_folder,
            "--overwrite",
        ],
        "img.ome.zarr",
    ),
    (
        "predict-into-the-input-folder-given",
        lambda w: ["predict", w.run, "-i", w.zarr_folder, "-o", w.zarr_folder, "--overwrite"],
        "img.ome.zarr",
    ),
    (
        "predict-into-a-folder-holding-the-input-folder",
        lambda w: ["predict", w.run, "-i", w.zarr_folder, "-o", w.root, "--overwrite"],
        "contains",
    ),
    (
        "predict-inside-the-input-store",
        lambda w: [
            "predict",
            w.run,
            "-i",
            w.zarr_folder / "img.ome.zarr",
            "-o",
            w.zarr_folder / "img.ome.zarr" / "preds",
        ],
        "img.ome.zarr",
    ),
    (
        "predict-into-the-run",
        lambda w: ["predict", w.run, "-i", w.image, "-o", w.run, "--overwrite"],
        "run",
    ),
    # postprocess: the output is the folder of the saved maps, or the run
    (
        "postprocess-into-the-folder-of-its-maps",
        lambda w: [
            "postprocess",
            w.run,
            "-i",
            w.zarr_folder / "img.ome.zarr",
            "-o",
            w.zarr_folder,
            "--overwrite",
        ],
        "img.ome.zarr",
    ),
    (
        "postprocess-into-the-run",
        lambda w: [
            "postprocess",
            w.run,
            "-i",
            w.zarr_folder / "img.ome.zarr",
            "-o",
            w.run,
            "--overwrite",
        ],
        "run",
    ),
    # export: a folder bioim2im did not write, the run exported, its checkpoint
    (
        "export-folder-over-a-user-folder",
        lambda w: ["export", w.run, "-f", "bioimageio", "--folder", "-o", w.user, "--overwrite"],
        "did not write",
    ),
    (
        "export-folder-over-the-run",
        lambda w: ["export", w.run, "-f", "bioimageio", "--folder", "-o", w.run, "--overwrite"],
        "run",
    ),
    (
        "export-over-the-checkpoint-exported",
        lambda w: [
            "export",
            w.run,
            "-f",
            "torchscript",
            "-o",
            w.run / "checkpoints" / "best.pt",
            "--overwrite",
        ],
        "best.pt",
    ),
    (
        "export-a-checkpoint-over-itself",
        lambda w: [
            "export",
            w.run / "checkpoints" / "last.pt",
            "-f",
            "onnx",
            "-o",
            w.run / "checkpoints" / "last.pt",
            "--overwrite",
        ],
        "last.pt",
    ),
    (
        "export-into-the-run",
        lambda w: ["export", w.run, "-f", "onnx", "-o", w.run / "model.onnx"],
        "run",
    ),
    # evaluate: an existing file without --overwrite; its own inputs even with it
    (
        "evaluate-json-over-a-user-file",
        lambda w: ["evaluate", "-p", w.truth, "-t", w.truth, "--json", w.user_file],
        "--overwrite",
    ),
    (
        "evaluate-csv-over-a-user-file",
        lambda w: ["evaluate", "-p", w.truth, "-t", w.truth, "--csv", w.user / "notes.txt"],
        "notes.txt",
    ),
    (
        "evaluate-json-over-its-prediction",
        lambda w: [
            "evaluate",
            "-p",
            _first_truth(w),
            "-t",
            w.mask,
            "--json",
            _first_truth(w),
            "--overwrite",
        ],
        "reads",
    ),
    (
        "evaluate-csv-over-its-truth",
        lambda w: ["evaluate", "-p", _first_truth(w), "-t", w.mask, "--csv", w.mask, "--overwrite"],
        "mask.tif",
    ),
    (
        "evaluate-json-over-an-image-of-its-folders",
        lambda w: [
            "evaluate",
            "-p",
            w.truth,
            "-t",
            w.truth,
            "--json",
            _first_truth(w),
            "--overwrite",
        ],
        "reads",
    ),
    # schema: an existing file without --overwrite
    ("schema-over-a-user-file", lambda w: ["schema", "-o", w.user_file], "--overwrite"),
    # demo: a folder it did not make
    ("demo-into-a-user-folder", lambda w: ["demo", "-o", w.user], "user"),
    ("demo-over-a-user-folder", lambda w: ["demo", "-o", w.user, "--overwrite"], "user"),
    ("demo-over-a-user-file", lambda w: ["demo", "-o", w.user_file, "--overwrite"], "is a file"),
]


@pytest.mark.parametrize(("args", "mention"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_command_aimed_at_what_it_did_not_create_is_refused_and_changes_nothing(
    workspace: Workspace, args: Args, mention: str
) -> None:
    before = fingerprint(workspace.root)
    result = invoke(*args(workspace), cwd=workspace.root)
    assert_user_error(result, mention)
    after = fingerprint(workspace.root)
    assert lost_or_changed(before, after) == []
    assert sorted(set(after) - set(before)) == [], "a refused command wrote something"


# (id, arguments): commands that run, writing next to the user's files
WRITES: list[tuple[str, Args]] = [
    (
        "predict-into-a-user-folder",
        lambda w: ["predict", w.run, "-i", w.image, "-o", w.user, "--format", "tiff"],
    ),
    (
        "predict-next-to-its-input",
        lambda w: ["predict", w.run, "-i", w.zarr_folder / "img.ome.zarr", "-o", w["preds"]],
    ),
    (
        "evaluate-reports-into-the-folder-of-its-truths",
        lambda w: ["evaluate", "-p", w.truth, "-t", w.truth, "--json", w.truth / "r.json"],
    ),
    (
        "predict-into-a-folder-inside-the-input-folder",
        lambda w: ["predict", w.run, "-i", w.zarr_folder, "-o", w.zarr_folder / "preds"],
    ),
    (
        "evaluate-reports-into-a-user-folder",
        lambda w: [
            "evaluate",
            "-p",
            w.truth,
            "-t",
            w.truth,
            "--json",
            w.user / "r.json",
            "--csv",
            w.user / "r.csv",
        ],
    ),
    ("schema-into-a-user-folder", lambda w: ["schema", "-o", w.user / "schema.json"]),
    ("train-into-an-empty-folder", lambda w: ["train", w.preset, "--run-dir", w["empty"]]),
    (
        "export-a-file-into-a-user-folder",
        lambda w: ["export", w.run, "-f", "torchscript", "-o", w.user / "model.pt"],
    ),
]


@pytest.mark.parametrize("args", [c[1] for c in WRITES], ids=[c[0] for c in WRITES])
def test_a_command_that_runs_only_adds_paths(workspace: Workspace, args: Args) -> None:
    before = fingerprint(workspace.root)
    assert_ok(invoke(*args(workspace), cwd=workspace.root))
    assert lost_or_changed(before, fingerprint(workspace.root)) == []


def test_predicting_into_the_inputs_folder_keeps_the_raw_array(workspace: Workspace) -> None:
    """The case reproduced: ``img.ome.zarr`` lost its raw array to its own prediction."""
    from bioim2im.io import open_image

    source = workspace.zarr_folder / "img.ome.zarr"
    raw = open_image(source).read()
    result = invoke(
        "predict", workspace.run, "-i", source, "-o", workspace.zarr_folder, "--overwrite"
    )
    assert_user_error(result, str(workspace.zarr_folder))
    np.testing.assert_array_equal(open_image(source).read(), raw)


def test_export_overwrite_replaces_its_own_folder_export(
    workspace: Workspace, tmp_path: Path
) -> None:
    """A folder an earlier ``export --folder`` wrote is bioim2im's: --overwrite replaces it."""
    out = tmp_path / "package"
    args = ["export", workspace.run, "-f", "bioimageio", "--folder", "-o", out]
    assert_ok(invoke(*args))
    assert (out / "rdf.yaml").is_file()
    (out / "rdf.yaml").write_text("stale", encoding="utf-8")
    assert_ok(invoke(*args, "--overwrite"))
    assert (out / "rdf.yaml").read_text(encoding="utf-8") != "stale"
