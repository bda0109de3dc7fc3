"""instance-2d / instance-3d end to end: foreground + boundary head, seeded watershed whose
thresholds are tuned on the validation images and saved with the model; the objects found beat
the connected components of an Otsu threshold."""

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

SIZE_2D = ["data.patch_size=[64, 64]", "data.batch_size=4", "predict.roi_size=[64, 64]"]
# Thresholds far too strict: most objects are lost until tuning fixes them.
STRICT = (
    'model.heads.seg.postprocess=[{ name = "sigmoid" }, { name = "watershed", mode = "boundary", '
    'threshold = 0.95, seed_threshold = 0.99 }, { name = "remove_small_objects", min_size = 10 }]'
)


def ap50(pred: np.ndarray, truth: np.ndarray) -> float:
    return detection_scores(instance_overlaps(pred, truth.astype(np.int64)), 0.5)["ap@0.50"]


def components_of_otsu_ap(held_out: Path) -> float:
    raw, truths = images(held_out / "IM"), images(held_out / "GT")
    return float(np.mean([ap50(label(otsu(raw[k])), truths[k]) for k in truths]))


def watershed_of(preset_toml: str) -> dict:
    steps = tomllib.loads(preset_toml)["model"]["heads"]["seg"]["postprocess"]
    return next(step for step in steps if step["name"] == "watershed")


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

    assert tuned["params"] != {"threshold": 0.95, "seed_threshold": 0.99}
    assert tuned["ap@0.50 after"] > tuned["ap@0.50 before"]
    for saved in (
        load_checkpoint(run_dir / "checkpoints" / "best.pt")["preset"],
        load_checkpoint(run_dir / "checkpoints" / "last.pt")["preset"],
        (run_dir / "preset.toml").read_text(),
    ):
        assert watershed_of(saved).items() >= tuned["params"].items()

    # Prediction reads the tuned thresholds from the checkpoint: better than the strict ones.
    raw, truths = images(held_out / "IM"), images(held_out / "GT")
    tuned_ap = np.mean([ap50(predict(run_dir, raw[k])["seg"][0], truths[k]) for k in raw])
    strict_ap = np.mean(
        [ap50(predict(run_dir, raw[k], overrides=[STRICT])["seg"][0], truths[k]) for k in raw]
    )
    assert tuned_ap > strict_ap + 0.1, (tuned_ap, strict_ap)


@pytest.mark.slow
def test_instance_3d_beats_components_of_otsu(synthetic, tmp_path: Path) -> None:
    data, held_out = synthetic("nuclei", (16, 64, 64))
    size = ["data.patch_size=[16, 32, 32]", "data.batch_size=4", "predict.roi_size=[16, 64, 64]"]
    run = train_and_predict("instance-3d", tiny(data, 100, *size, lr=0.01), held_out, tmp_path)
    report = evaluate(run.predictions, held_out / "GT", task="instance", head="seg")
    baseline = components_of_otsu_ap(held_out)
    assert report.aggregate["ap@0.50"] > baseline + 0.15, (report.aggregate, baseline)
