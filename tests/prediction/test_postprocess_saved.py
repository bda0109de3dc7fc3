"""`bioim2im postprocess`: a head's postprocessing over saved probabilities, without the
network, equal to predicting with those settings; block by block, resumable, stitched."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from predict_helpers import head_path, nuclei_image, read_zarr

from bioim2im import predict_files
from bioim2im.data.synthetic import nuclei
from bioim2im.io import open_image
from bioim2im.io.tiff import write_tiff

THRESHOLD = 'model.heads.prob.postprocess=[{name = "sigmoid"}, {name = "threshold", value = 0.3}]'
OBJECTS = (
    'model.heads.prob.postprocess=[{name = "sigmoid"}, {name = "threshold", value = 0.4}, '
    '{name = "connected_components"}]'
)


@pytest.fixture
def saved(run_2d: Path, tmp_path: Path) -> Path:
    """Probabilities of a 96 x 80 image saved by predict (head prob: [sigmoid])."""
    image, _ = nuclei((96, 80), seed=5, radius=(4.0, 7.0))
    write_tiff(tmp_path / "cells.tif", image, axes="YX")
    predict_files(run_2d, tmp_path / "cells.tif", tmp_path / "probs", progress=False)
    return tmp_path / "probs"


def _probabilities(saved: Path) -> np.ndarray:
    return read_zarr(saved / "cells.ome.zarr" / "prob" / "0")


def test_a_new_threshold_on_saved_probabilities_equals_predicting_with_it(
    cli, run_2d, saved, tmp_path
) -> None:
    out = tmp_path / "out"
    result = cli(
        "postprocess", run_2d, "-i", saved, "-o", out, "--set", THRESHOLD, "--head", "prob"
    )
    assert result.code == 0, result.err
    mask = read_zarr(head_path(out / "cells.ome.zarr", "prob") / "0")
    np.testing.assert_array_equal(mask, (_probabilities(saved) > 0.3).astype(mask.dtype))
    direct = tmp_path / "direct"
    predict_files(run_2d, tmp_path / "cells.tif", direct, overrides=[THRESHOLD], progress=False)
    np.testing.assert_array_equal(
        mask, read_zarr(head_path(direct / "cells.ome.zarr", "prob") / "0")
    )
    with open(out / "predictions.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["head"] == "prob" and row["output"] == "cells.ome.zarr/labels/prob"
    assert json.loads(row["postprocess"]) == [
        {"name": "sigmoid"},
        {"name": "threshold", "value": 0.3},
    ]


def test_objects_are_numbered_across_small_blocks_as_in_the_whole_image(
    run_2d, saved, tmp_path
) -> None:
    from scipy import ndimage

    from bioim2im.prediction.postprocess import postprocess_files

    out = tmp_path / "objects"
    summary = postprocess_files(
        run_2d, saved, out, overrides=[OBJECTS, "predict.block_size=[32, 32]"], heads=["prob"]
    )
    assert summary.blocks == 9  # 96 x 80 in 32 x 32 blocks
    labels = read_zarr(head_path(out / "cells.ome.zarr", "prob") / "0")[0]
    whole, count = ndimage.label(_probabilities(saved)[0] > 0.4)
    assert count > 3 and labels.max() == count
    # The same objects, whatever their numbers.
    pairs = set(zip(labels[whole > 0].tolist(), whole[whole > 0].tolist(), strict=True))
    assert len(pairs) == count and (labels > 0).sum() == (whole > 0).sum()


def test_an_interrupted_run_resumes_with_the_blocks_it_had_not_done(
    run_2d, saved, tmp_path, monkeypatch
) -> None:
    from bioim2im.prediction import postprocess

    out = tmp_path / "out"
    settings = [THRESHOLD, "predict.block_size=[32, 32]"]
    real, calls = postprocess._pointwise_block, []

    def dies_after_four(*args: object) -> None:
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(args)
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(postprocess, "_pointwise_block", dies_after_four)
    with pytest.raises(KeyboardInterrupt):
        postprocess.postprocess_files(run_2d, saved, out, overrides=settings, heads=["prob"])
    assert not (out / "cells.ome.zarr").exists()  # nothing published half-done
    monkeypatch.setattr(postprocess, "_pointwise_block", real)
    said: list[str] = []
    summary = postprocess.postprocess_files(
        run_2d, saved, out, overrides=settings, heads=["prob"], report=said.append
    )
    assert (summary.resumed_blocks, summary.blocks) == (4, 9)
    assert said == ["cells: 5 blocks, 4 done earlier"]
    mask = read_zarr(head_path(out / "cells.ome.zarr", "prob") / "0")
    np.testing.assert_array_equal(mask, (_probabilities(saved) > 0.3).astype(mask.dtype))


def test_image_files_are_taken_as_raw_output_and_integer_probabilities_scaled_back(
    cli, run_2d, images_2d, tmp_path
) -> None:
    # Probabilities as uint8 TIFF files: 0..255 stands for 0..1.
    cli_result = cli(
        "predict", run_2d, "-i", images_2d / "cells_0.tif", "-o", tmp_path / "tiff",
        "--format", "tiff", "--set", 'model.heads.prob.output_dtype="uint8"',
    )  # fmt: skip
    assert cli_result.code == 0, cli_result.err
    stored = open_image(tmp_path / "tiff" / "cells_0_prob.tif").read()
    by_table = tmp_path / "by_table"
    assert cli("postprocess", run_2d, "-i", tmp_path / "tiff", "-o", by_table,
               "--head", "prob", "--set", THRESHOLD, "--format", "tiff").code == 0  # fmt: skip
    mask = open_image(by_table / "cells_0_prob.tif").read()
    np.testing.assert_array_equal(mask, (stored / 255.0 > 0.3).astype(mask.dtype))
    # The same file on its own is the head's raw output: here a threshold on its values.
    raw = tmp_path / "raw"
    single = cli(
        "postprocess", run_2d, "-i", tmp_path / "tiff" / "cells_0_prob.tif", "-o", raw,
        "--head", "prob", "--set", 'model.heads.prob.postprocess=[{name = "threshold", value = 100}]',
    )  # fmt: skip
    assert single.code == 0, single.err
    np.testing.assert_array_equal(
        read_zarr(head_path(raw / "cells_0_prob.ome.zarr", "prob") / "0")[0],
        (stored > 100).astype(np.uint8),
    )


def test_mistakes_are_one_message_and_write_nothing(cli, run_2d, saved, tmp_path) -> None:
    out = tmp_path / "out"
    other = 'model.heads.prob.postprocess=[{name = "softmax"}, {name = "argmax"}]'
    wrong = cli("postprocess", run_2d, "-i", saved, "-o", out, "--head", "prob", "--set", other)
    assert wrong.code == 2
    assert "its values went through model.heads.prob.postprocess = [sigmoid]" in wrong.err
    assert "give a chain that starts with those steps" in wrong.err
    nothing = cli("postprocess", run_2d, "-i", saved, "-o", out, "--head", "prob")
    assert nothing.code == 2 and "nothing to do" in nothing.err
    head = cli("postprocess", run_2d, "-i", saved, "-o", out, "--head", "nope")
    assert (
        head.code == 2 and "--head 'nope' is not a head of the run (heads: seg, prob)" in head.err
    )
    files = cli("postprocess", run_2d, "-i", saved / "cells.ome.zarr" / "prob", "-o", out)
    assert files.code == 2 and "choose one with --head (seg, prob)" in files.err
    missing = cli("postprocess", run_2d, "-i", tmp_path / "none", "-o", out, "--head", "prob")
    assert missing.code == 2 and "no such file or directory" in missing.err
    assert not out.exists()
    into_itself = cli("postprocess", run_2d, "-i", saved, "-o", saved, "--head", "prob",
                      "--set", THRESHOLD, "--overwrite")  # fmt: skip
    assert into_itself.code == 2 and "which this command reads" in into_itself.err
    done = cli("postprocess", run_2d, "-i", saved, "-o", out, "--head", "prob", "--set", THRESHOLD)
    assert done.code == 0
    again = cli("postprocess", run_2d, "-i", saved, "-o", out, "--head", "prob", "--set", THRESHOLD)
    assert again.code == 2 and "outputs are in the way (use --overwrite" in again.err
    assert (out / "cells.ome.zarr").is_dir()


def test_a_3d_volume_is_postprocessed_block_by_block(run_3d, tmp_path) -> None:
    nuclei_image(tmp_path / "vol.tif", (16, 48, 40), seed=3)
    predict_files(run_3d, tmp_path / "vol.tif", tmp_path / "probs", progress=False)
    steps = 'model.heads.seg.postprocess=[{name = "sigmoid"}, {name = "threshold", value = 0.5}]'
    from bioim2im.prediction.postprocess import postprocess_files

    summary = postprocess_files(
        run_3d,
        tmp_path / "probs",
        tmp_path / "out",
        overrides=[steps, "predict.block_size=[8, 32, 32]"],
    )
    assert summary.blocks > 1
    probabilities = read_zarr(head_path(tmp_path / "probs" / "vol.ome.zarr", "seg") / "0")
    mask = read_zarr(head_path(tmp_path / "out" / "vol.ome.zarr", "seg") / "0")
    assert mask.shape == probabilities.shape == (1, 16, 48, 40)
    np.testing.assert_array_equal(mask, (probabilities > 0.5).astype(mask.dtype))
