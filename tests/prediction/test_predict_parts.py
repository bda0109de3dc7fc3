"""`bioim2im predict --part K/N` and `--finalize`: independent processes, started in any order,
one killed and started again, write what a single process writes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from predict_helpers import INSTANCE, head_path, nuclei_image, read_zarr

from bioim2im.errors import UserError
from bioim2im.prediction.blockwise import load_finished_blocks
from bioim2im.prediction.job import predict_files

OVERRIDES = [*INSTANCE, "predict.block_size=[32, 32]"]


def part_command(run: Path, images: Path, out: Path, part: str) -> list[str]:
    command = [sys.executable, "-m", "bioim2im", "predict", str(run), "-i", str(images)]
    command += ["-o", str(out), "--part", part]
    return command + [a for text in OVERRIDES for a in ("--set", text)]


def recorded(work: Path, name: str) -> set[int]:
    return load_finished_blocks(work / "progress" / f"t00000-{name}.json")


def test_parts_started_in_any_order_one_killed_and_restarted_equal_one_process(run_2d, tmp_path):
    images = tmp_path / "images"
    nuclei_image(images / "big.tif", (256, 256), seed=4)
    nuclei_image(images / "small.tif", (96, 160), seed=5)
    out = tmp_path / "parts"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "env": env}
    later = [subprocess.Popen(part_command(run_2d, images, out, f"{k}/3"), **quiet) for k in (3, 2)]
    first = subprocess.Popen(
        part_command(run_2d, images, out, "1/3"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    work = out / ".big.ome.zarr.partial"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if len(recorded(work, "part1of3")) >= 2:
                break
            time.sleep(0.01)
    finally:
        first.kill()
        first.wait()
    killed_after = recorded(work, "part1of3")
    assert 2 <= len(killed_after) < 21, "part 1 was not killed while predicting"
    for process in later:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
    # Nothing is published while a part is missing; finishing now says what is missing.
    assert not (out / "big.ome.zarr").exists() and not (out / "predictions.csv").exists()
    with pytest.raises(UserError) as refused:
        predict_files(run_2d, str(images), out, overrides=OVERRIDES, finalize=True)
    assert "blocks are not predicted yet" in str(refused.value)
    assert "big.tif" in str(refused.value)

    # Part 1 again: it resumes, and as the last part to finish it publishes everything.
    summary = predict_files(run_2d, str(images), out, overrides=OVERRIDES, part="1/3")
    big = summary.results[0].blocks
    assert big.resumed == len(killed_after) and big.total == big.resumed + big.predicted
    assert summary.waiting == []
    assert sorted(p.name for p in out.iterdir()) == [
        "big.ome.zarr",
        "predictions.csv",
        "small.ome.zarr",
    ]

    single = tmp_path / "single"
    predict_files(run_2d, str(images), single, overrides=OVERRIDES, progress=False)
    for stem in ("big", "small"):
        labels = read_zarr(head_path(out / f"{stem}.ome.zarr", "seg") / "0")
        expected = read_zarr(head_path(single / f"{stem}.ome.zarr", "seg") / "0")
        assert labels.max() > 5
        np.testing.assert_array_equal(labels, expected, err_msg=stem)
        np.testing.assert_allclose(
            read_zarr(out / f"{stem}.ome.zarr" / "prob" / "0"),
            read_zarr(single / f"{stem}.ome.zarr" / "prob" / "0"),
            atol=1e-5,
        )
    assert (out / "predictions.csv").read_text() == (single / "predictions.csv").read_text()
    # Finishing again finds everything done and changes nothing.
    again = predict_files(run_2d, str(images), out, overrides=OVERRIDES, finalize=True)
    assert all(r.done_earlier for r in again.results)


def test_finalize_finishes_what_the_parts_predicted(run_2d, tmp_path, monkeypatch):
    image = nuclei_image(tmp_path / "cells.tif", (64, 96), seed=6)
    out = tmp_path / "out"
    # Both parts stop before finishing (as if killed then); --finalize finishes.
    import bioim2im.prediction.parts as parts

    monkeypatch.setattr(parts, "_finish", lambda job, found, store: None)
    for part in ("2/2", "1/2"):
        predict_files(run_2d, str(image), out, overrides=OVERRIDES, part=part, progress=False)
    assert not (out / "cells.ome.zarr").exists()
    monkeypatch.undo()
    summary = predict_files(run_2d, str(image), out, overrides=OVERRIDES, finalize=True)
    assert [r.done_earlier for r in summary.results] == [False]
    single = predict_files(
        run_2d, str(image), tmp_path / "single", overrides=OVERRIDES, progress=False
    )
    assert single.results[0].blocks.total == 6
    np.testing.assert_array_equal(
        read_zarr(head_path(out / "cells.ome.zarr", "seg") / "0"),
        read_zarr(head_path(tmp_path / "single" / "cells.ome.zarr", "seg") / "0"),
    )
    assert sorted(p.name for p in out.iterdir()) == ["cells.ome.zarr", "predictions.csv"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--part", "0/3"], "K must be between 1 and N"),
        (["--part", "4/3"], "K must be between 1 and N"),
        (["--part", "half"], "give K/N"),
        (["--part", "1/2", "--devices", "2"], "leave out --devices"),
        (["--part", "\uff11/\uff12"], "give K/N"),  # fullwidth digits
        (["--part", "\u0661/\u0662"], "give K/N"),  # Arabic-Indic digits
        (["--part", "1/2", "--finalize"], "takes no --part"),
        (["--finalize", "--part", "2/2"], "takes no --part"),
    ],
)
def test_bad_parts_are_refused_with_one_message(cli, run_2d, tmp_path, args, message):
    image = nuclei_image(tmp_path / "cells.tif", (64, 64))
    result = cli("predict", run_2d, "-i", image, "-o", tmp_path / "out", *args)
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err
    assert not (tmp_path / "out").exists()


def test_finalize_before_any_part_says_so(cli, run_2d, tmp_path):
    image = nuclei_image(tmp_path / "cells.tif", (64, 64))
    result = cli("predict", run_2d, "-i", image, "-o", tmp_path / "out", "--finalize")
    assert result.code == 2
    assert "no part of this command has predicted anything there yet" in result.err
    assert not (tmp_path / "out").exists()
