"""A killed or interrupted prediction resumes where it stopped; outputs of other settings are
never taken over, finished ones never overwritten without asking."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from predict_helpers import INSTANCE, head_path, nuclei_image, read_zarr

import bioim2im.prediction.command as predict_module
from bioim2im.errors import UserError
from bioim2im.prediction.blockwise import load_finished_blocks
from bioim2im.prediction.job import predict_files

SMALL_BLOCKS = "predict.block_size=[32, 32]"


def finished_blocks(work_dir: Path) -> set[int]:
    found: set[int] = set()
    for path in (work_dir / "progress").glob("*.json"):
        found |= load_finished_blocks(path)
    return found


def test_a_killed_prediction_resumes_without_predicting_finished_blocks_again(run_2d, tmp_path):
    image = nuclei_image(tmp_path / "big.tif", (256, 256), seed=4)
    out = tmp_path / "out"
    overrides = [*INSTANCE, SMALL_BLOCKS]
    command = [sys.executable, "-m", "bioim2im", "predict", str(run_2d), "-i", str(image)]
    command += ["-o", str(out), *(a for text in overrides for a in ("--set", text))]
    work = out / ".big.ome.zarr.partial"
    # One thread, as in this process, for the same arithmetic on both sides.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if len(finished_blocks(work)) >= 6:
                break
            time.sleep(0.01)
    finally:
        process.kill()
        process.wait()
    recorded = finished_blocks(work)
    assert 6 <= len(recorded) < 64, "the run was not killed while predicting"
    # What a killed run leaves is never mistaken for a finished output.
    assert not (out / "big.ome.zarr").exists() and not (out / "predictions.csv").exists()

    summary = predict_files(run_2d, str(image), out, overrides=overrides, progress=False)
    blocks = summary.results[0].blocks
    assert (blocks.total, blocks.resumed, blocks.predicted) == (
        64,
        len(recorded),
        64 - len(recorded),
    )
    assert sorted(p.name for p in out.iterdir()) == ["big.ome.zarr", "predictions.csv"]

    reference = tmp_path / "reference"
    predict_files(run_2d, str(image), reference, overrides=overrides, progress=False)
    for head in ("seg", "prob"):
        resumed = read_zarr(head_path(out / "big.ome.zarr", head) / "0")
        expected = read_zarr(head_path(reference / "big.ome.zarr", head) / "0")
        # Blocks next to finished ones add the same windows up in another order.
        np.testing.assert_allclose(resumed, expected, atol=1e-5, err_msg=head)


def interrupt_before_finishing(monkeypatch: pytest.MonkeyPatch, stem: str) -> None:
    """Make the prediction stop (as on Ctrl-C) once ``stem``'s blocks are all predicted."""
    finish = predict_module.finish_image

    def finish_or_stop(model, found, store, tiling):  # type: ignore[no-untyped-def]
        if found.stem == stem:
            raise KeyboardInterrupt
        finish(model, found, store, tiling)

    monkeypatch.setattr(predict_module, "finish_image", finish_or_stop)


def test_rerunning_the_command_takes_the_inputs_it_finished_as_done(
    run_2d, images_2d, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    interrupt_before_finishing(monkeypatch, "cells_1")
    with pytest.raises(KeyboardInterrupt):
        predict_files(run_2d, str(images_2d), out, progress=False)
    assert (out / "cells_0.ome.zarr").is_dir() and not (out / "cells_1.ome.zarr").exists()
    assert not (out / "predictions.csv").exists()
    monkeypatch.undo()

    summary = predict_files(run_2d, str(images_2d), out, progress=False)
    assert [r.done_earlier for r in summary.results] == [True, False, False]
    second = summary.results[1].blocks
    assert second.resumed == second.total and second.predicted == 0
    with open(out / "predictions.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    assert sorted(p.name for p in out.iterdir()) == [
        "cells_0.ome.zarr",
        "cells_1.ome.zarr",
        "cells_2.ome.zarr",
        "predictions.csv",
    ]
    # Once finished, the same command has nothing left to do (a kill after its last write, or
    # a scheduler running it twice, costs nothing); other settings are refused.
    again = predict_files(run_2d, str(images_2d), out, progress=False)
    assert [r.done_earlier for r in again.results] == [True, True, True]
    with pytest.raises(UserError, match="--overwrite"):
        predict_files(run_2d, str(images_2d), out, overrides=["predict.tta=true"], progress=False)


def test_an_unfinished_prediction_with_other_settings_is_refused_unless_overwrite(
    run_2d, images_2d, tmp_path, monkeypatch
):
    image, out = str(images_2d / "cells_0.tif"), tmp_path / "out"
    interrupt_before_finishing(monkeypatch, "cells_0")
    with pytest.raises(KeyboardInterrupt):
        predict_files(run_2d, image, out, progress=False)
    monkeypatch.undo()
    with pytest.raises(UserError, match=r"unfinished prediction .* other settings") as error:
        predict_files(run_2d, image, out, overrides=["predict.tta=true"], progress=False)
    assert ".cells_0.ome.zarr.partial" in str(error.value)
    summary = predict_files(
        run_2d, image, out, overrides=["predict.tta=true"], overwrite=True, progress=False
    )
    assert summary.results[0].blocks.resumed == 0
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_overwrite_replaces_a_finished_output(run_2d, images_2d, tmp_path):
    image, out = str(images_2d / "cells_0.tif"), tmp_path / "out"
    predict_files(run_2d, image, out, progress=False)
    first = read_zarr(out / "cells_0.ome.zarr" / "prob" / "0")
    predict_files(
        run_2d, image, out, overrides=["predict.tta=true"], overwrite=True, progress=False
    )
    second = read_zarr(out / "cells_0.ome.zarr" / "prob" / "0")
    assert second.shape == first.shape and not np.array_equal(second, first)
    assert sorted(p.name for p in out.iterdir()) == ["cells_0.ome.zarr", "predictions.csv"]


def test_overwrite_predicts_again_what_the_same_command_finished(run_2d, images_2d, tmp_path):
    """Without --overwrite the same command takes its finished output as done; with it, the
    input is predicted again (a new bioim2im, a timing: nothing tells a stale output)."""
    image, out = str(images_2d / "cells_0.tif"), tmp_path / "out"
    first = predict_files(run_2d, image, out, progress=False)
    assert [r.done_earlier for r in first.results] == [False]
    again = predict_files(run_2d, image, out, progress=False)
    assert [r.done_earlier for r in again.results] == [True]
    replaced = predict_files(run_2d, image, out, overwrite=True, progress=False)
    assert [r.done_earlier for r in replaced.results] == [False]
    blocks = replaced.results[0].blocks
    assert blocks.predicted == blocks.total > 0 and blocks.resumed == 0
    assert sorted(p.name for p in out.iterdir()) == ["cells_0.ome.zarr", "predictions.csv"]


def test_a_resumed_work_directory_loses_the_temporary_files_of_zarr_writes_cut_short(
    tmp_path: Path,
) -> None:
    """A process killed inside one of zarr's atomic writes leaves ``.zgroup.<uuid>.partial``;
    resuming removes it (published, it made zarr warn on listing the output's members), and
    nothing else."""
    from bioim2im.prediction.outputs import WorkDir

    work = WorkDir(tmp_path / ".cells.ome.zarr.partial")
    work.start("abc", fresh=False)
    group = work.path / "cells.ome.zarr" / "prob"
    group.mkdir(parents=True)
    cut_short = group / ".zgroup.729b95053c7a46a08ff986fbb73d053c.partial"
    kept = [group / ".zgroup", group / "notes.partial", group / "0.partial"]
    for path in [cut_short, *kept]:
        path.write_text("{}")
    assert work.state("abc") == "same"
    work.start("abc", fresh=False)
    assert not cut_short.exists() and all(path.exists() for path in kept)
