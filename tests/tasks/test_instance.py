"""instance-2d / instance-3d end to end (EmbedSeg: spatial embeddings + seed map, clustering),
and the distance-map head: thresholds tuned on the validation images and saved with the model,
objects that beat the connected components of an Otsu threshold, ids stitched across blocks."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import label
from task_helpers import images, otsu, tiny, train_and_predict

from bioim2im.evaluation import evaluate
from bioim2im.metrics.instance import detection_scores, instance_overlaps
from bioim2im.model.checkpoint import load_checkpoint

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SIZE_2D = ["data.patch_size=[64, 64]", "data.batch_size=4"]
# Thresholds far too strict: most objects are lost until tuning fixes them.
STRICT = (
    'model.heads.seg.postprocess=[{ name = "embedseg_cluster", fg_threshold = 0.9, '
    "seed_threshold = 0.99 }]"
)
DISTANCE_HEAD = (
    'model.heads.seg={ name = "conv", task = "instance", out_channels = 2, '
    'loss = { name = "instance_distance" }, postprocess = [{ name = "sigmoid" }, '
    '{ name = "watershed", mode = "probability", seed_channel = 1, smooth = 1.0 }], '
    'metrics = [{ name = "instance_ap" }], output_dtype = "uint32" }'
)


def ap50(pred: np.ndarray, truth: np.ndarray) -> float:
    return detection_scores(instance_overlaps(pred, truth.astype(np.int64)), 0.5)["ap@0.50"]


def best_ious(truth: np.ndarray, found: np.ndarray) -> np.ndarray:
    """For each object of ``truth``, its best IoU with an object of ``found``."""
    overlaps = instance_overlaps(found, truth.astype(np.int64))
    best = np.zeros(len(overlaps.true_ids))
    np.maximum.at(best, overlaps.rows, overlaps.iou)
    return best


def components_of_otsu_ap(held_out: Path) -> float:
    raw, truths = images(held_out / "IM"), images(held_out / "GT")
    return float(np.mean([ap50(label(otsu(raw[k])), truths[k]) for k in truths]))


def tuned_step(preset_toml: str) -> dict:
    steps = tomllib.loads(preset_toml)["model"]["heads"]["seg"]["postprocess"]
    return next(step for step in steps if step["name"] == "embedseg_cluster")


def test_boundary_watershed_splits_touching_objects_at_their_boundaries() -> None:
    from skimage.draw import disk
    from skimage.segmentation import find_boundaries

    from bioim2im.plugin.manager import get_registry

    truth = np.zeros((40, 60), np.int64)
    truth[disk((20, 20), 10)] = 1
    truth[disk((20, 37), 9)] = 2  # overlaps the first disk: the two touch
    channels = np.stack([truth > 0, find_boundaries(truth, mode="inner")]).astype(np.float32)
    watershed = get_registry().get("postprocessor", "watershed").build({"mode": "boundary"})
    labels = watershed(channels)[0]
    assert ap50(labels, truth) == 1.0


@pytest.fixture(scope="module")
def instance_2d(synthetic, tmp_path_factory):
    data, held_out = synthetic("nuclei", (64, 64))
    run = train_and_predict(
        "instance-2d", tiny(data, 80, *SIZE_2D), held_out, tmp_path_factory.mktemp("instance")
    )
    return run, held_out


@pytest.mark.slow
def test_instance_2d_beats_components_of_otsu(instance_2d) -> None:
    run, held_out = instance_2d
    report = evaluate(run.predictions, held_out / "GT", task="instance", head="seg")
    baseline = components_of_otsu_ap(held_out)
    assert report.aggregate["ap@0.50"] > max(0.6, baseline + 0.2), (report.aggregate, baseline)
    assert (run.run_dir / "tuning.json").is_file()


@pytest.mark.slow
def test_tuned_thresholds_are_saved_with_the_model_and_used_by_predict(
    instance_2d, tmp_path: Path
) -> None:
    from bioim2im import predict
    from bioim2im.config import load_preset
    from bioim2im.data.datasets import training_datasets
    from bioim2im.plugin.manager import get_registry
    from bioim2im.training.tuning import tune_postprocessing

    trained, held_out = instance_2d
    run_dir = shutil.copytree(trained.run_dir, tmp_path / "run")
    preset = load_preset(run_dir / "preset.toml", [STRICT])
    registry = get_registry()
    _, val = training_datasets(preset, run_dir)
    tuned = tune_postprocessing(run_dir, preset, val, registry)["seg"]

    assert tuned["step"] == "embedseg_cluster"
    assert tuned["params"] != {"fg_threshold": 0.9, "seed_threshold": 0.99}
    assert tuned["ap@0.50 after"] > tuned["ap@0.50 before"]
    for saved in (
        load_checkpoint(run_dir / "checkpoints" / "best.pt")["preset"],
        load_checkpoint(run_dir / "checkpoints" / "last.pt")["preset"],
        (run_dir / "preset.toml").read_text(),
    ):
        assert tuned_step(saved).items() >= tuned["params"].items()

    # Prediction reads the tuned thresholds from the checkpoint: better than the strict ones.
    raw, truths = images(held_out / "IM"), images(held_out / "GT")
    tuned_ap = np.mean([ap50(predict(run_dir, raw[k])["seg"][0], truths[k]) for k in raw])
    strict_ap = np.mean(
        [ap50(predict(run_dir, raw[k], overrides=[STRICT])["seg"][0], truths[k]) for k in raw]
    )
    assert tuned_ap > strict_ap + 0.1, (tuned_ap, strict_ap)


def test_thresholds_are_tuned_on_the_outputs_prediction_makes_with_test_time_flips(
    instance_2d, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``predict.tta`` the tuned thresholds are chosen on flip-averaged outputs, as
    prediction makes them (averaged seed maps peak lower than one pass's)."""
    from bioim2im.config import load_preset
    from bioim2im.data.datasets import training_datasets
    from bioim2im.plugin.manager import get_registry
    from bioim2im.prediction import blockwise
    from bioim2im.training.tuning import tune_postprocessing

    trained, _ = instance_2d
    run_dir = shutil.copytree(trained.run_dir, tmp_path / "run")
    flipped: list[object] = []
    once = blockwise.predict_array

    def recording(*args: object, **options: object) -> dict[str, np.ndarray]:
        flipped.append(options.get("tta"))
        return once(*args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(blockwise, "predict_array", recording)
    registry = get_registry()
    for tta, expected in (("true", True), ("[[1]]", [[1]]), ("false", False)):
        preset = load_preset(run_dir / "preset.toml", [STRICT, f"predict.tta={tta}"])
        _, val = training_datasets(preset, run_dir)
        flipped.clear()
        tuned = tune_postprocessing(run_dir, preset, val, registry)["seg"]
        assert flipped and all(f == expected for f in flipped), (tta, flipped)
        assert tuned["ap@0.50 after"] >= tuned["ap@0.50 before"]


@pytest.mark.slow
def test_embedseg_ids_are_unique_across_prediction_blocks(instance_2d, tmp_path: Path) -> None:
    from bioim2im import predict, predict_files
    from bioim2im.data.synthetic import nuclei
    from bioim2im.io.tiff import write_tiff

    trained, _ = instance_2d
    image, _ = nuclei((128, 128), seed=7, radius=(4.0, 7.0))
    write_tiff(tmp_path / "cells.tif", image, axes="YX")
    summary = predict_files(
        trained.run_dir,
        str(tmp_path / "cells.tif"),
        tmp_path / "out",
        overrides=["predict.block_size=[32, 32]"],
        format="tiff",
        progress=False,
    )
    assert summary.results[0].blocks.total == 16
    tiled = np.squeeze(images(tmp_path / "out", "_seg")["cells"])
    whole = predict(trained.run_dir, image)["seg"][0]
    # Objects cut by block borders carry one id: 1..n, as many as predicted in one piece.
    borders = np.zeros(tiled.shape, dtype=bool)
    borders[32::32, :] = borders[:, 32::32] = True
    assert len(np.unique(tiled[borders & (tiled > 0)])) >= 5
    assert set(np.unique(tiled)) == set(range(int(tiled.max()) + 1))
    # The objects of a whole-image run. Clustering takes seeds greedily, so a block, which sees
    # other seeds in its halo than the whole image, may settle a contested voxel otherwise.
    assert whole.max() > 10
    assert abs(int(tiled.max()) - int(whole.max())) <= 0.05 * whole.max()
    matched = best_ious(whole, tiled)
    assert np.mean(matched > 0.9) > 0.9, np.sort(matched)[:10]


@pytest.mark.slow
def test_distance_maps_beat_components_of_otsu(synthetic, tmp_path: Path) -> None:
    data, held_out = synthetic("nuclei", (64, 64))
    run = train_and_predict(
        "instance-2d", tiny(data, 80, *SIZE_2D, DISTANCE_HEAD), held_out, tmp_path
    )
    report = evaluate(run.predictions, held_out / "GT", task="instance", head="seg")
    baseline = components_of_otsu_ap(held_out)
    assert report.aggregate["ap@0.50"] > baseline + 0.15, (report.aggregate, baseline)


@pytest.mark.slow
def test_instance_3d_beats_components_of_otsu(synthetic, tmp_path: Path) -> None:
    data, held_out = synthetic("nuclei", (16, 64, 64))
    size = ["data.patch_size=[16, 32, 32]", "data.batch_size=4"]
    run = train_and_predict("instance-3d", tiny(data, 100, *size, lr=0.01), held_out, tmp_path)
    report = evaluate(run.predictions, held_out / "GT", task="instance", head="seg")
    baseline = components_of_otsu_ap(held_out)
    assert report.aggregate["ap@0.50"] > baseline + 0.15, (report.aggregate, baseline)
