"""bioim2im.evaluate: pairing predictions with truths, choosing the task, scores and reports."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from rich.console import Console

from bioim2im.errors import UserError
from bioim2im.evaluation import EvaluationReport, evaluate, find_pairs
from bioim2im.io import OmeZarrStreamWriter, write_image


def tif(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)
    return path


def heads_zarr(path: Path, heads: dict[str, np.ndarray]) -> Path:
    """A container with one image per head, as ``bioim2im predict`` writes it (``C`` of 1)."""
    writer = OmeZarrStreamWriter(path)
    for name, array in heads.items():
        image = writer.create_image(name, shape=(1, *array.shape), dtype=array.dtype, axes="CYX")
        image.write(tuple(slice(0, n) for n in image.shape), array[None])
    return writer.finalize()


def square(y: int, x: int, size: int = 4, shape: tuple[int, int] = (32, 32)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[y : y + size, x : x + size] = 1
    return mask


def objects(n: int) -> np.ndarray:
    """``n`` separate 4 x 4 objects labelled 1..n in a 32 x 32 image."""
    labels = np.zeros((32, 32), np.uint16)
    for i in range(n):
        y, x = divmod(i, 4)
        labels[y * 8 : y * 8 + 4, x * 8 : x * 8 + 4] = i + 1
    return labels


# --- pairing -------------------------------------------------------------------------------


def test_folders_pair_by_name_and_a_dataset_root_stands_for_its_gt(tmp_path: Path) -> None:
    for name in ("a", "b"):
        tif(tmp_path / "pred" / f"{name}.tif", square(4, 4))
        tif(tmp_path / "data" / "GT" / f"{name}.ome.tiff", square(4, 4))
    (tmp_path / "pred" / "notes.txt").write_text("not an image")

    report = evaluate(tmp_path / "pred", tmp_path / "data")

    assert [p.name for p in report.pairs] == ["a", "b"]
    assert report.pairs[0].truth == tmp_path / "data" / "GT" / "a.ome.tiff"
    assert report.task == "semantic"
    assert [row["dice"] for row in report.rows] == [1.0, 1.0]
    assert report.unmatched_predictions == report.unmatched_truths == []


def test_prediction_named_after_its_head_pairs_with_the_truth(tmp_path: Path) -> None:
    tif(tmp_path / "pred" / "img_01_nuclei.tif", square(4, 4))
    tif(tmp_path / "GT" / "img_01.tif", square(4, 4))

    pairs, _, _ = find_pairs(tmp_path / "pred", tmp_path / "GT")

    assert [(p.name, p.pred.name) for p in pairs] == [("img_01", "img_01_nuclei.tif")]


def test_several_heads_need_a_choice(tmp_path: Path) -> None:
    tif(tmp_path / "pred" / "a_nuclei.tif", square(4, 4))
    tif(tmp_path / "pred" / "a_boundary.tif", square(8, 8))
    tif(tmp_path / "GT" / "a.tif", square(4, 4))

    with pytest.raises(UserError, match="--head") as error:
        find_pairs(tmp_path / "pred", tmp_path / "GT")
    assert "boundary, nuclei" in str(error.value)
    assert str(tmp_path / "GT" / "a.tif") in str(error.value)

    report = evaluate(tmp_path / "pred", tmp_path / "GT", head="nuclei")
    assert report.pairs[0].pred.name == "a_nuclei.tif"
    assert report.rows[0]["dice"] == 1.0
    # The other head's file is another output, not an unmatched prediction.
    assert report.unmatched_predictions == []


def test_a_zarr_container_is_read_at_the_head(tmp_path: Path) -> None:
    heads_zarr(tmp_path / "pred" / "a.ome.zarr", {"seg": square(4, 4), "other": square(9, 9)})
    tif(tmp_path / "GT" / "a.tif", square(4, 4))

    with pytest.raises(UserError, match="several heads") as error:
        evaluate(tmp_path / "pred", tmp_path / "GT")
    assert "a.ome.zarr" in str(error.value) and "other, seg" in str(error.value)
    with pytest.raises(UserError, match="no head 'nuclei'"):
        evaluate(tmp_path / "pred", tmp_path / "GT", head="nuclei")

    report = evaluate(tmp_path / "pred", tmp_path / "GT", head="seg")
    assert report.pairs[0].pred == tmp_path / "pred" / "a.ome.zarr" / "seg"
    assert report.rows[0]["dice"] == 1.0


def test_the_only_head_of_a_container_needs_no_choice(tmp_path: Path) -> None:
    heads_zarr(tmp_path / "pred" / "a.ome.zarr", {"seg": square(4, 4)})
    tif(tmp_path / "GT" / "a.tif", square(4, 4))

    report = evaluate(tmp_path / "pred", tmp_path / "GT")

    assert report.pairs[0].pred == tmp_path / "pred" / "a.ome.zarr" / "seg"
    assert report.rows[0]["dice"] == 1.0


def test_two_single_images_pair_whatever_their_names(tmp_path: Path) -> None:
    pred = tif(tmp_path / "prediction.tif", square(4, 4))
    truth = write_image(tmp_path / "labels.ome.zarr", square(4, 4), axes="YX", is_label=True)

    report = evaluate(pred, truth)

    assert [(p.name, p.pred, p.truth) for p in report.pairs] == [("labels", pred, truth)]
    assert report.rows[0]["dice"] == 1.0


def test_one_prediction_against_a_truth_folder_ignores_the_other_truths(tmp_path: Path) -> None:
    pred = tif(tmp_path / "out" / "b_seg.tif", square(4, 4))
    for name in ("a", "b", "c"):
        tif(tmp_path / "GT" / f"{name}.tif", square(4, 4))

    report = evaluate(pred, tmp_path / "GT")

    assert [p.name for p in report.pairs] == ["b"]
    assert report.unmatched_truths == []


def test_unmatched_images_are_reported_when_some_pair(tmp_path: Path) -> None:
    tif(tmp_path / "pred" / "a.tif", square(4, 4))
    tif(tmp_path / "pred" / "extra.tif", square(4, 4))
    tif(tmp_path / "GT" / "a.tif", square(4, 4))
    tif(tmp_path / "GT" / "missing.tif", square(4, 4))
    json_path = tmp_path / "report.json"

    report = evaluate(tmp_path / "pred", tmp_path / "GT", json_path=json_path)

    assert [p.name for p in report.pairs] == ["a"]
    assert report.unmatched_predictions == [tmp_path / "pred" / "extra.tif"]
    assert report.unmatched_truths == [tmp_path / "GT" / "missing.tif"]
    unmatched = json.loads(json_path.read_text())["unmatched"]
    assert unmatched == {
        "predictions": [str(tmp_path / "pred" / "extra.tif")],
        "truths": [str(tmp_path / "GT" / "missing.tif")],
    }
    text = rendered(report)
    assert "warning" in text and "extra.tif" in text and "missing.tif" in text


def test_no_pair_is_an_error_listing_both_sides(tmp_path: Path) -> None:
    tif(tmp_path / "pred" / "x.tif", square(4, 4))
    tif(tmp_path / "GT" / "y.tif", square(4, 4))

    with pytest.raises(UserError, match="no prediction") as error:
        evaluate(tmp_path / "pred", tmp_path / "GT")

    assert error.value.problems == ["predictions: x.tif", "truths: y.tif"]
    assert str(tmp_path / "pred") in str(error.value)


def test_two_truths_with_one_name_are_an_error(tmp_path: Path) -> None:
    tif(tmp_path / "pred" / "a.tif", square(4, 4))
    tif(tmp_path / "GT" / "a.tif", square(4, 4))
    write_image(tmp_path / "GT" / "a.ome.zarr", square(4, 4), axes="YX")

    with pytest.raises(UserError, match="two truths are named 'a'"):
        evaluate(tmp_path / "pred", tmp_path / "GT")


@pytest.mark.parametrize("side", ["pred", "truth"])
def test_a_missing_path_is_named(tmp_path: Path, side: str) -> None:
    present = tif(tmp_path / "a.tif", square(4, 4))
    missing = tmp_path / "nowhere"
    pred, truth = (missing, present) if side == "pred" else (present, missing)

    with pytest.raises(UserError, match="does not exist") as error:
        evaluate(pred, truth)
    assert str(missing) in str(error.value)


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    tif(tmp_path / "GT" / "a.tif", square(4, 4))

    with pytest.raises(UserError, match="no images in") as error:
        evaluate(tmp_path / "pred", tmp_path / "GT")
    assert str(tmp_path / "pred") in str(error.value)


# --- reading -------------------------------------------------------------------------------


def test_a_shape_mismatch_names_both_files(tmp_path: Path) -> None:
    pred = tif(tmp_path / "pred" / "a.tif", np.zeros((16, 16), np.uint8))
    truth = tif(tmp_path / "GT" / "a.tif", np.zeros((32, 32), np.uint8))

    with pytest.raises(UserError, match="differ in shape") as error:
        evaluate(tmp_path / "pred", tmp_path / "GT")

    message = str(error.value)
    assert str(pred) in message and str(truth) in message
    assert "(16, 16)" in message and "(32, 32)" in message


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "pred" / "a.tif"
    broken.parent.mkdir()
    broken.write_bytes(b"not a tiff at all")
    tif(tmp_path / "GT" / "a.tif", square(4, 4))

    with pytest.raises(UserError) as error:
        evaluate(tmp_path / "pred", tmp_path / "GT")
    assert str(broken) in str(error.value)


def test_a_channel_of_one_is_dropped(tmp_path: Path) -> None:
    # The container's image is CYX with C = 1; the truth is YX.
    heads_zarr(tmp_path / "pred" / "a.ome.zarr", {"seg": square(4, 4)})
    tif(tmp_path / "GT" / "a.tif", square(4, 4)[None, None])

    report = evaluate(tmp_path / "pred", tmp_path / "GT", task="semantic")

    assert report.rows[0]["dice"] == 1.0


def test_a_float_mask_of_whole_numbers_is_scored_as_labels(tmp_path: Path) -> None:
    pred = tif(tmp_path / "pred.tif", square(4, 4).astype(np.float32))
    truth = tif(tmp_path / "truth.tif", square(4, 4))

    assert evaluate(pred, truth, task="semantic").rows[0]["dice"] == 1.0

    tif(pred, square(4, 4) * np.float32(0.7))
    with pytest.raises(UserError, match="non-whole values") as error:
        evaluate(pred, truth, task="semantic")
    assert str(pred) in str(error.value)


# --- automatic task ------------------------------------------------------------------------


def test_auto_task_rules(tmp_path: Path) -> None:
    truth = tif(tmp_path / "truth.tif", objects(9))
    pred = tif(tmp_path / "pred.tif", objects(9))
    report = evaluate(pred, truth)
    assert report.task == "instance"
    assert "9 labels" in report.task_reason

    # At most 8 labels are classes.
    tif(truth, objects(8))
    tif(pred, objects(8))
    assert evaluate(pred, truth).task == "semantic"
    # Unless classes are given, then always semantic.
    tif(truth, objects(9))
    tif(pred, objects(9))
    assert evaluate(pred, truth, classes=[1, 2]).task == "semantic"
    # A prediction with non-whole values is an intensity image, even for an integer truth.
    tif(pred, objects(9).astype(np.float32) + 0.5)
    report = evaluate(pred, truth)
    assert report.task == "regression"
    assert str(pred) in report.task_reason
    # A floating-point truth too.
    tif(truth, objects(9).astype(np.float32))
    assert evaluate(pred, truth).task == "regression"


def test_explicit_task_overrides_and_is_checked(tmp_path: Path) -> None:
    pred = tif(tmp_path / "pred.tif", objects(3))
    truth = tif(tmp_path / "truth.tif", objects(3))

    report = evaluate(pred, truth, task="instance")
    assert (report.task, report.task_reason) == ("instance", "given")
    with pytest.raises(UserError, match="unknown task 'segmentation'"):
        evaluate(pred, truth, task="segmentation")
    with pytest.raises(UserError, match="semantic task only"):
        evaluate(pred, truth, task="instance", classes=[1])


# --- metrics -------------------------------------------------------------------------------


def test_semantic_scores_of_a_known_overlap_and_their_mean(tmp_path: Path) -> None:
    # 4 x 4 squares shifted by 2 columns: 8 shared pixels of 16 + 16.
    tif(tmp_path / "pred" / "a.tif", square(4, 6))
    tif(tmp_path / "GT" / "a.tif", square(4, 4))
    tif(tmp_path / "pred" / "b.tif", square(4, 4))
    tif(tmp_path / "GT" / "b.tif", square(4, 4))

    report = evaluate(tmp_path / "pred", tmp_path / "GT")

    a, b = report.rows
    assert a["dice"] == pytest.approx(0.5) and a["iou"] == pytest.approx(1 / 3)
    assert a["dice/1"] == pytest.approx(0.5)
    assert b["dice"] == 1.0
    assert report.aggregate["dice"] == pytest.approx(0.75)
    assert report.aggregate["iou"] == pytest.approx((1 / 3 + 1) / 2)


def test_instance_scores_with_a_missed_object(tmp_path: Path) -> None:
    truth = objects(10)
    pred = truth.copy()
    pred[truth == 10] = 0
    report = evaluate(tif(tmp_path / "p.tif", pred), tif(tmp_path / "t.tif", truth))

    row = report.rows[0]
    assert report.task == "instance"
    assert row["precision@0.50"] == 1.0
    assert row["recall@0.50"] == pytest.approx(0.9)
    assert row["ap@0.50"] == pytest.approx(0.9)
    assert row["f1@0.50"] == pytest.approx(18 / 19)
    assert row["ap@0.50:0.95"] == pytest.approx(0.9)
    assert row["mean_matched_iou@0.50"] == 1.0


def test_hausdorff_distance_follows_the_voxel_size(tmp_path: Path) -> None:
    pred = tif(tmp_path / "p.tif", square(4, 6))
    truth = tif(tmp_path / "t.tif", square(4, 4))

    assert evaluate(pred, truth, task="instance").rows[0]["hausdorff"] == pytest.approx(2.0)
    given = evaluate(pred, truth, task="instance", voxel_size=0.5)
    assert given.rows[0]["hausdorff"] == pytest.approx(1.0)
    # The truth file's own voxel size (micrometers) when none is given.
    truth = write_image(tmp_path / "t.ome.tif", square(4, 4), axes="YX", voxel_size=(0.25, 0.25))
    recorded = evaluate(pred, truth, task="instance")
    assert recorded.rows[0]["hausdorff"] == pytest.approx(0.5)


def test_regression_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((16, 16)).astype(np.float32)
    tif(tmp_path / "GT" / "a.tif", truth)
    tif(tmp_path / "pred" / "a.tif", truth.astype(np.float64) + 0.1)
    tif(tmp_path / "GT" / "b.tif", truth)
    tif(tmp_path / "pred" / "b.tif", truth)

    report = evaluate(tmp_path / "pred", tmp_path / "GT")

    a, b = report.rows
    assert report.task == "regression"
    assert list(a) == ["name", "psnr", "ssim", "pearson", "mae", "nrmse"]
    assert a["mae"] == pytest.approx(0.1, abs=1e-6)
    assert a["pearson"] == pytest.approx(1.0)
    assert b["psnr"] == math.inf and b["ssim"] == 1.0
    assert report.aggregate["mae"] == pytest.approx(0.05, abs=1e-6)


# --- reports -------------------------------------------------------------------------------


def test_json_and_csv_files(tmp_path: Path) -> None:
    # a: dice 0.5; b: nothing to find and nothing found, so dice/1 is missing from its row.
    tif(tmp_path / "pred" / "a.tif", square(4, 6))
    tif(tmp_path / "GT" / "a.tif", square(4, 4))
    tif(tmp_path / "pred" / "b.tif", np.zeros((32, 32), np.uint8))
    tif(tmp_path / "GT" / "b.tif", np.zeros((32, 32), np.uint8))
    json_path, csv_path = tmp_path / "out" / "metrics.json", tmp_path / "out" / "metrics.csv"

    report = evaluate(tmp_path / "pred", tmp_path / "GT", json_path=json_path, csv_path=csv_path)

    document = json.loads(json_path.read_text())
    assert document["task"] == "semantic"
    assert [image["name"] for image in document["images"]] == ["a", "b"]
    assert document["images"][0] == {"name": "a", "dice": 0.5, "dice/1": 0.5, **_iou(1 / 3)}
    assert document["aggregate"] == report.aggregate
    assert document["aggregate"]["dice"] == pytest.approx(0.75)

    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["name", "dice", "dice/1", "iou", "iou/1"]
    assert [row["name"] for row in rows] == ["a", "b", "aggregate"]
    assert rows[1]["dice/1"] == ""
    assert float(rows[2]["dice"]) == pytest.approx(0.75)
    assert float(rows[2]["dice/1"]) == pytest.approx(0.5)
    assert not any(p.name.startswith(".") for p in json_path.parent.iterdir())


def _iou(value: float) -> dict[str, float]:
    return {"iou": pytest.approx(value), "iou/1": pytest.approx(value)}


def test_undefined_and_infinite_values_are_null_in_json(tmp_path: Path) -> None:
    truth = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    pred, truth_path = tif(tmp_path / "p.tif", truth), tif(tmp_path / "t.tif", truth)
    json_path, csv_path = tmp_path / "m.json", tmp_path / "m.csv"

    evaluate(pred, truth_path, json_path=json_path, csv_path=csv_path)

    document = json.loads(json_path.read_text())
    assert document["images"][0]["psnr"] is None
    assert document["aggregate"]["psnr"] is None
    assert document["images"][0]["ssim"] == 1.0
    with open(csv_path, newline="") as file:
        assert next(csv.DictReader(file))["psnr"] == "inf"


def rendered(report: EvaluationReport) -> str:
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(report)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_render_report_shows_a_compact_instance_table(tmp_path: Path) -> None:
    labels = objects(10)
    report = evaluate(tif(tmp_path / "p.tif", labels), tif(tmp_path / "t.tif", labels))

    text = rendered(report)

    for column in ("ap@0.50", "f1@0.50", "ap@0.50:0.95", "pq@0.50", "hausdorff"):
        assert column in text
    assert "ap@0.75" not in text and "precision@0.95" not in text
    assert "aggregate" in text and "1.0000" in text
    assert "instance" in text and "10 labels" in text
