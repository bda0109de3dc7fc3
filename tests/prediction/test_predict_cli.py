"""`bioim2im predict`: outputs named and laid out as documented, tiled prediction equal to
in-memory prediction, labels stitched across blocks and processes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from predict_helpers import INSTANCE, head_path, matched_objects, nuclei_image, read_zarr

from bioim2im import predict, predict_files
from bioim2im.data.synthetic import nuclei
from bioim2im.io import open_image
from bioim2im.io.tiff import write_tiff

SMALL_BLOCKS = "predict.block_size=[32, 32]"


def test_folder_to_one_ome_zarr_per_input_with_an_image_per_head(cli, run_2d, images_2d, tmp_path):
    out = tmp_path / "out"
    result = cli("predict", run_2d, "--input", images_2d, "--output", out)
    assert result.code == 0, result.err
    names = ["cells_0.ome.zarr", "cells_1.ome.zarr", "cells_2.ome.zarr", "predictions.csv"]
    assert sorted(p.name for p in out.iterdir()) == names
    group = zarr.open_group(out / "cells_0.ome.zarr", mode="r")
    # The top shows the probabilities; the mask is a label image of it (NGFF labels).
    assert sorted(group.group_keys()) == ["labels", "prob"]
    assert group["labels"].attrs["labels"] == ["seg"]
    top = group.attrs["multiscales"][0]
    assert [d["path"] for d in top["datasets"]] == ["prob/0"]
    for head in ("labels/seg", "prob"):
        multiscales = group[head].attrs["multiscales"]
        assert multiscales[0]["version"] == "0.4"
        assert [a["name"] for a in multiscales[0]["axes"]] == ["c", "y", "x"]
        assert [d["path"] for d in multiscales[0]["datasets"]] == ["0"]
    # The mask is a label image (NGFF image-label), the probabilities are not.
    assert "image-label" in group["labels/seg"].attrs and "image-label" not in group["prob"].attrs
    seg, prob = group["labels/seg/0"], group["prob/0"]
    assert seg.shape == prob.shape == (1, 64, 64)
    assert seg.dtype == np.uint8 and prob.dtype == np.float32
    assert set(np.unique(seg[:])) <= {0, 1} and prob[:].min() >= 0 and prob[:].max() <= 1
    assert open_image(out / "cells_0.ome.zarr" / "labels" / "seg").axes == "CYX"

    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(Path(r["input"]).name, r["head"], r["output"]) for r in rows[:2]] == [
        ("cells_0.tif", "seg", "cells_0.ome.zarr/labels/seg"),
        ("cells_0.tif", "prob", "cells_0.ome.zarr/prob"),
    ]
    assert len(rows) == 6
    assert {(r["axes"], r["shape"]) for r in rows} == {("CYX", "1x64x64")}
    assert {r["dtype"] for r in rows} == {"uint8", "float32"}
    assert "cells_2: 1/1 blocks" in result.err  # progress lines, stderr not being a terminal
    assert "cells_2.tif" in result.err and "voxels" in result.err  # the summary


def test_tiff_format_writes_one_ome_tiff_per_head(cli, run_2d, images_2d, tmp_path):
    zarr_out, tiff_out = tmp_path / "zarr", tmp_path / "tiff"
    assert cli("predict", run_2d, "--input", images_2d, "--output", zarr_out).code == 0
    result = cli("predict", run_2d, "-i", images_2d, "-o", tiff_out, "--format", "tiff")
    assert result.code == 0, result.err
    expected = sorted(f"cells_{i}_{h}.tif" for i in range(3) for h in ("seg", "prob"))
    assert sorted(p.name for p in tiff_out.iterdir()) == [*expected, "predictions.csv"]
    with tifffile.TiffFile(tiff_out / "cells_1_prob.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "YX"  # tifffile drops the single channel
    for head in ("seg", "prob"):
        from_tiff = open_image(tiff_out / f"cells_1_{head}.tif").read()
        group = "labels/seg" if head == "seg" else head
        from_zarr = read_zarr(zarr_out / "cells_1.ome.zarr" / group / "0")
        np.testing.assert_array_equal(from_tiff, from_zarr[0])
    with open(tiff_out / "predictions.csv", newline="") as handle:
        assert [r["output"] for r in csv.DictReader(handle)][:2] == [
            "cells_0_seg.tif",
            "cells_0_prob.tif",
        ]


def test_pyramid_levels_and_zarr_v3(run_2d, images_2d, tmp_path):
    out = tmp_path / "out"
    settings = ["predict.pyramid_levels=1", "predict.zarr_format=3"]
    predict_files(run_2d, str(images_2d / "cells_0.tif"), out, overrides=settings, progress=False)
    group = zarr.open_group(out / "cells_0.ome.zarr" / "labels" / "seg", mode="r")
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5" and "image-label" in ome
    assert [d["path"] for d in ome["multiscales"][0]["datasets"]] == ["0", "1"]
    assert group["0"].shape == (1, 64, 64) and group["1"].shape == (1, 32, 32)
    np.testing.assert_array_equal(group["1"][:], group["0"][:, ::2, ::2])


@pytest.mark.parametrize("shape", [(64, 64), (50, 70), (20, 24)])
def test_block_wise_prediction_equals_in_memory_prediction(run_2d, tmp_path, shape):
    path = nuclei_image(tmp_path / "cells.tif", shape, seed=3)
    out = tmp_path / "out"
    predict_files(run_2d, str(path), out, overrides=[SMALL_BLOCKS], progress=False)
    whole = predict(run_2d, open_image(path).read())
    tiled = {h: read_zarr(head_path(out / "cells.ome.zarr", h) / "0") for h in ("seg", "prob")}
    assert whole["prob"].shape == tiled["prob"].shape == (1, *shape)
    np.testing.assert_allclose(tiled["prob"], whole["prob"], atol=1e-5)
    assert np.mean(tiled["seg"] == whole["seg"]) > 0.999


def test_3d_block_wise_prediction_equals_in_memory_prediction(run_3d, tmp_path):
    path = nuclei_image(tmp_path / "stack.tif", (16, 32, 32), seed=5)
    out = tmp_path / "out"
    blocks = "predict.block_size=[8, 16, 16]"
    summary = predict_files(run_3d, str(path), out, overrides=[blocks], progress=False)
    assert summary.results[0].blocks.total == 8
    tiled = read_zarr(head_path(out / "stack.ome.zarr", "seg") / "0")
    whole = predict(run_3d, open_image(path).read())["seg"]
    assert tiled.shape == whole.shape == (1, 16, 32, 32)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_an_upsampling_head_writes_its_finer_grid(run_upsampling, tmp_path):
    image, _ = nuclei((64, 64), seed=6)
    path = tmp_path / "cells.tif"
    write_tiff(path, image, axes="YX", voxel_size=(0.4, 0.4))
    out = tmp_path / "out"
    predict_files(run_upsampling, str(path), out, overrides=[SMALL_BLOCKS], progress=False)
    group = zarr.open_group(out / "cells.ome.zarr" / "prob", mode="r")
    assert group["0"].shape == (1, 128, 128) and group["0"].chunks == (1, 64, 64)
    transform = group.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert transform["scale"] == [1.0, 0.2, 0.2]
    whole = predict(run_upsampling, image)["prob"]
    np.testing.assert_allclose(group["0"][:], whole, atol=1e-5)


def test_time_lapse_is_predicted_frame_by_frame_and_keeps_its_time_axis(run_2d, tmp_path):
    frames = np.stack([nuclei((48, 48), seed=s)[0] for s in (1, 2, 3)])
    path = tmp_path / "movie.tif"
    write_tiff(path, frames, axes="TYX", voxel_size=(0.5, 0.5))
    out = tmp_path / "out"
    predict_files(run_2d, str(path), out, overrides=[SMALL_BLOCKS], progress=False)
    group = zarr.open_group(out / "movie.ome.zarr" / "prob", mode="r")
    entry = group.attrs["multiscales"][0]
    assert [a["name"] for a in entry["axes"]] == ["t", "c", "y", "x"]
    assert entry["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 0.5, 0.5]
    movie = group["0"][:]
    assert movie.shape == (3, 1, 48, 48)
    for t, frame in enumerate(frames):
        np.testing.assert_allclose(movie[t], predict(run_2d, frame)["prob"], atol=1e-5)


def test_manifest_and_glob_inputs(cli, run_2d, images_2d, tmp_path):
    manifest = images_2d / "list.csv"
    manifest.write_text("IM,other\ncells_2.tif,x\ncells_0.tif,y\n", encoding="utf-8")
    by_manifest = tmp_path / "manifest"
    assert cli("predict", run_2d, "-i", manifest, "-o", by_manifest).code == 0
    assert sorted(p.name for p in by_manifest.glob("*.ome.zarr")) == [
        "cells_0.ome.zarr",
        "cells_2.ome.zarr",
    ]
    by_glob = tmp_path / "glob"
    assert cli("predict", run_2d, "-i", str(images_2d / "cells_[12].tif"), "-o", by_glob).code == 0
    assert sorted(p.name for p in by_glob.glob("*.ome.zarr")) == [
        "cells_1.ome.zarr",
        "cells_2.ome.zarr",
    ]


def test_probabilities_written_as_uint8_are_scaled_to_255(run_2d, images_2d, tmp_path):
    path = str(images_2d / "cells_0.tif")
    predict_files(run_2d, path, tmp_path / "float", progress=False)
    scaled = ['model.heads.prob.output_dtype="uint8"']
    predict_files(run_2d, path, tmp_path / "uint8", overrides=scaled, progress=False)
    probabilities = read_zarr(tmp_path / "float" / "cells_0.ome.zarr" / "prob" / "0")
    written = read_zarr(tmp_path / "uint8" / "cells_0.ome.zarr" / "prob" / "0")
    assert written.dtype == np.uint8
    np.testing.assert_array_equal(written, np.rint(probabilities * 255).astype(np.uint8))


def test_instance_labels_across_blocks_match_a_whole_image_run(run_2d, tmp_path):
    image, _ = nuclei((128, 128), seed=7, radius=(4.0, 7.0))
    path = tmp_path / "cells.tif"
    write_tiff(path, image, axes="YX")
    out = tmp_path / "out"
    summary = predict_files(
        run_2d, str(path), out, overrides=[*INSTANCE, SMALL_BLOCKS], progress=False
    )
    assert summary.results[0].blocks.total == 16
    tiled = read_zarr(out / "cells.ome.zarr" / "labels" / "seg" / "0")[0]
    whole = predict(run_2d, image, overrides=INSTANCE)["seg"][0]
    assert tiled.dtype == np.uint32
    # Objects cut by block borders were merged: ids are 1..n, as many as in one piece.
    borders = np.zeros_like(tiled, dtype=bool)
    borders[32::32, :] = borders[:, 32::32] = True
    assert len(np.unique(tiled[borders & (tiled > 0)])) >= 5
    assert set(np.unique(tiled)) == set(range(tiled.max() + 1))
    assert tiled.max() == whole.max() > 10
    assert min(matched_objects(whole, tiled)) > 0.95
    assert min(matched_objects(tiled, whole)) > 0.95


@pytest.mark.distributed
def test_two_processes_predict_what_one_does(run_2d, images_2d, tmp_path):
    single = tmp_path / "single"
    overrides = [*INSTANCE, SMALL_BLOCKS]
    predict_files(run_2d, str(images_2d), single, overrides=overrides, progress=False)
    command = [sys.executable, "-m", "bioim2im", "predict", str(run_2d), "--input"]
    command += [str(images_2d), "--output", str(tmp_path / "two"), "--devices", "2"]
    for text in overrides:
        command += ["--set", text]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for i in range(3):
        for head in ("seg", "prob"):
            one = read_zarr(head_path(single / f"cells_{i}.ome.zarr", head) / "0")
            two = read_zarr(head_path(tmp_path / "two" / f"cells_{i}.ome.zarr", head) / "0")
            np.testing.assert_allclose(two, one, atol=1e-5)
    assert (tmp_path / "two" / "predictions.csv").read_text() == (
        single / "predictions.csv"
    ).read_text()


def test_a_window_larger_than_the_image_is_cut_to_the_image(cli, run_2d, tmp_path: Path) -> None:
    image = open_image(nuclei_image(tmp_path / "small.tif", (40, 50), seed=3)).read()
    huge = predict(run_2d, image, overrides=["predict.roi_size=[100000, 100000]"])["prob"]
    # The image rounded up to the network's divisor (2): one 40 x 50 window.
    fitted = predict(run_2d, image, overrides=["predict.roi_size=[40, 50]"])["prob"]
    np.testing.assert_allclose(huge, fitted, atol=1e-6)
    refused = cli("check", run_2d / "preset.toml", "--set", "predict.roi_size=[0, 0]")
    assert refused.code == 2
    assert "predict.roi_size.0: Input should be greater than 0" in refused.err
