"""The CellMap workflow end to end: train from the toolbox's datasplit with the shipped preset,
predict the test crops, pack the submission, score it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from stores import PRESETS, datasplit_text, manifest_text, scene, write_truth

CORE_PRESETS = Path(__file__).resolve().parents[3] / "presets"
CLASSES = ["mito", "nuc", "er"]
RAW = "{root}/data/{{dataset}}/{{dataset}}.zarr/recon-1/em/fibsem-uint8"
# Test crops: one at the training scale, one finer on the anisotropic dataset, one whose classes
# the model does not know.
TEST_CROPS = [
    (11, "jrc_alpha", (8.0, 8.0, 8.0), (100.0, 92.0, 60.0), (20, 24, 28), ("mito", "nuc", "er")),
    (12, "jrc_beta", (4.0, 4.0, 4.0), (150.0, 62.0, 90.0), (30, 40, 36), ("er",)),
    (13, "jrc_beta", (8.0, 8.0, 8.0), (0.0, 0.0, 0.0), (8, 8, 8), ("golgi",)),
]


def tiny(data_path: Path, *extra: str) -> list[str]:
    return [
        f"data.path={data_path}",
        f"data.layout.classes={json.dumps(CLASSES)}",
        "data.patch_size=[16, 16, 16]",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.patches_per_image=4",
        "model.features=8",
        "model.backbone.channels=[8, 16]",
        "model.backbone.strides=[2]",
        "train.steps=12",
        "train.val_every=6",
        "train.val_max_batches=2",
        "train.checkpoint_every=6",
        "train.optimizer.lr=0.005",
        "train.scheduler.warmup_steps=0",
        "train.seed=1",
        "logging.progress=lines",
        "logging.snapshots=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def datasplit(cellmap_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("workflow") / "datasplit.csv"
    path.write_text(
        datasplit_text(cellmap_root / "data", {1: "train", 2: "train", 3: "train", 4: "validate"})
    )
    return path


@pytest.fixture(scope="module")
def trained(datasplit: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bioim2im.api import train

    run = tmp_path_factory.mktemp("run") / "cellmap"
    result = train(PRESETS / "cellmap-3d.toml", overrides=tiny(datasplit), run_dir=run)
    assert result.step == 12
    return run


def test_trains_from_a_toolbox_datasplit(trained: Path):
    summary = json.loads((trained / "cellmap.json").read_text())
    assert summary["train"]["crops"] == ["jrc_alpha/crop1", "jrc_alpha/crop2", "jrc_beta/crop3"]
    assert summary["validate"]["crops"] == ["jrc_beta/crop4"]
    assert len(summary["pos_weight"]) == 3 and all(w > 1 for w in summary["pos_weight"])
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any("val/loss" in r and np.isfinite(r["val/loss"]) for r in records)
    state = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    assert "out_channels = 3" in state["preset"]


def test_resumes_exactly(datasplit: Path, tmp_path: Path, trained: Path):
    from bioim2im.api import train

    run = tmp_path / "resumed"
    # Stopped at step 6, then continued to 12: the same weights as 12 steps in one go.
    train(PRESETS / "cellmap-3d.toml", overrides=tiny(datasplit, "train.steps=6"), run_dir=run)
    train(overrides=["train.steps=12"], resume=run)
    done = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    reference = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    assert done["step"] == reference["step"] == 12
    for name, value in reference["model"].items():
        torch.testing.assert_close(done["model"][name], value, msg=name)


def write_manifest(path: Path) -> Path:
    rows = []
    for number, dataset, scale, lower, shape, classes in TEST_CROPS:
        translation = [lo + s / 2 for lo, s in zip(lower, scale, strict=True)]
        rows += [(number, dataset, name, scale, translation, shape) for name in classes]
    path.write_text(manifest_text(rows))
    return path


def write_test_truth(path: Path) -> Path:
    crops = {}
    for number, _, scale, lower, shape, classes in TEST_CROPS:
        translation = [lo + s / 2 for lo, s in zip(lower, scale, strict=True)]
        labels = scene(translation, scale, shape)
        crops[f"crop{number}"] = {
            name: (labels[name], scale, translation) for name in classes if name in labels
        }
    return write_truth(path, crops)


def test_predicts_packs_and_scores_the_test_crops(
    trained: Path, cellmap_root: Path, tmp_path: Path, cli
):
    manifest = write_manifest(tmp_path / "test_crop_manifest.csv")
    predictions = tmp_path / "predictions.zarr"
    raw = RAW.format(root=cellmap_root)
    result = cli(
        "cellmap", "predict", trained, "--crops", manifest, "--raw", raw, "-o", predictions
    )
    assert result.code == 0, result.err
    assert "crop13: the model knows none of golgi" in result.err
    group = zarr.open_group(predictions, mode="r")
    assert sorted(group.group_keys()) == ["crop11", "crop12"]
    for number, _, scale, lower, shape, classes in TEST_CROPS[:2]:
        for name in classes:
            array = group[f"crop{number}/{name}"]
            assert array.shape == shape
            assert array.attrs["voxel_size"] == list(scale)
            assert array.attrs["translation"] == [
                lo + s / 2 for lo, s in zip(lower, scale, strict=True)
            ]
            assert array.dtype == (np.uint32 if name in ("mito", "nuc") else np.uint8)

    submission = tmp_path / "submission.zip"
    result = cli("cellmap", "pack", predictions, "--crops", manifest, "-o", submission)
    assert result.code == 2 and "crop13: missing from" in result.err and not submission.exists()
    result = cli(
        "cellmap", "pack", predictions, "--crops", manifest, "-o", submission, "--allow-missing"
    )
    assert result.code == 0, result.err
    with zipfile.ZipFile(submission) as archive:
        assert ".zgroup" in archive.namelist() and "crop11/mito/.zarray" in archive.namelist()
    assert (
        cli("cellmap", "pack", submission, "--crops", manifest, "--check", "--allow-missing").code
        == 0
    )

    truth = write_test_truth(tmp_path / "truth.zarr")
    scores = tmp_path / "scores.json"
    result = cli(
        "evaluate", "--task", "cellmap", "--pred", submission, "--truth", truth, "--json", scores
    )
    assert result.code == 0, result.err
    assert "overall" in result.out
    report = json.loads(scores.read_text())
    assert set(report["label_scores"]) == {"mito", "nuc", "er"}
    assert set(report["crops"]) == {"crop11", "crop12", "crop13"}
    assert report["crops"]["crop13"] == {}  # the truth has no golgi array
    assert 0.0 <= report["overall_score"] <= 1.0
    # Pooled counts are the sums of the per-crop counts.
    for name, scores_of in report["label_scores"].items():
        for key in ("tp", "fp", "fn"):
            total = sum(crop[name][key] for crop in report["crops"].values() if name in crop)
            assert scores_of[key] == total, (name, key)


def test_crops_predicted_on_a_dask_cluster_equal_one_process(
    trained: Path, cellmap_root: Path, tmp_path: Path, cli
):
    pytest.importorskip("distributed")
    manifest = write_manifest(tmp_path / "test_crop_manifest.csv")
    raw = RAW.format(root=cellmap_root)
    single, spread = tmp_path / "single.zarr", tmp_path / "spread.zarr"
    command = ["cellmap", "predict", trained, "--crops", manifest, "--raw", raw]
    assert cli(*command, "-o", single).code == 0
    result = cli(*command, "-o", spread, "--cluster", "local:2")
    assert result.code == 0, result.err
    assert "Dask: tcp://" in result.err and "crop13: the model knows none of golgi" in result.err
    expected, got = zarr.open_group(single, mode="r"), zarr.open_group(spread, mode="r")
    assert sorted(got.group_keys()) == ["crop11", "crop12"]
    for number, _, _, _, _, classes in TEST_CROPS[:2]:
        for name in classes:
            mine, theirs = got[f"crop{number}/{name}"], expected[f"crop{number}/{name}"]
            assert mine.dtype == theirs.dtype and dict(mine.attrs) == dict(theirs.attrs)
            assert np.asarray(mine[...]).tobytes() == np.asarray(theirs[...]).tobytes(), name
    assert not list(tmp_path.glob(".*partial*"))


def test_two_dimensional_preset_trains_and_predicts_plane_by_plane(
    datasplit: Path, cellmap_root: Path, tmp_path: Path, cli
):
    from bioim2im.api import train

    run = tmp_path / "run2d"
    overrides = tiny(datasplit, "data.patch_size=[32, 32]", "train.steps=4", "train.val_every=4")
    overrides += ["model.backbone.channels=[8, 16]", "model.backbone.strides=[2]"]
    train(PRESETS / "cellmap-2d.toml", overrides=overrides, run_dir=run)
    manifest = write_manifest(tmp_path / "manifest.csv")
    predictions = tmp_path / "p.zarr"
    result = cli(
        "cellmap",
        "predict",
        run,
        "--crops",
        manifest,
        "--raw",
        RAW.format(root=cellmap_root),
        "-o",
        predictions,
    )
    assert result.code == 0, result.err
    assert zarr.open_group(predictions, mode="r")["crop12/er"].shape == (30, 40, 36)


def test_bad_cellmap_inputs_exit_2(
    trained: Path, datasplit: Path, tmp_path: Path, cli, write_preset
):
    manifest = write_manifest(tmp_path / "m.csv")
    cases = [
        (
            ("cellmap", "predict", trained, "--crops", manifest, "-o", tmp_path / "o.zarr"),
            "Missing option '--raw'",
        ),
        (
            (
                "cellmap",
                "predict",
                trained,
                "--crops",
                manifest,
                "--raw",
                "nowhere/x",
                "-o",
                tmp_path / "o.zarr",
            ),
            "must hold {dataset}",
        ),
        (
            (
                "cellmap",
                "predict",
                trained,
                "--crops",
                manifest,
                "--raw",
                str(tmp_path / "{dataset}.zarr"),
                "-o",
                tmp_path / "o.zarr",
            ),
            "no such zarr store",
        ),
        (
            (
                "cellmap",
                "predict",
                trained,
                "--crops",
                datasplit,
                "--raw",
                "a/{dataset}",
                "-o",
                tmp_path / "o.zarr",
            ),
            "not a CellMap test-crop manifest",
        ),
        (
            (
                "check",
                PRESETS / "cellmap-3d.toml",
                "--set",
                "model.heads.seg.out_channels=3",
            ),
            "with out_channels = 2 (one per class of data.layout.classes), got task 'semantic' and 3 channel(s)",
        ),
        (
            (
                "check",
                PRESETS / "cellmap-3d.toml",
                "--set",
                "model.heads.seg.loss={name='ce'}",
            ),
            "not softmax classes",
        ),
        (
            (
                "check",
                CORE_PRESETS / "segmentation-2d.toml",
                "--set",
                "data.layout={name='auto', classes=['mito']}",
            ),
            "data.layout.classes",
        ),
        (
            (
                "check",
                PRESETS / "cellmap-3d.toml",
                "--set",
                "data.layout.target_shape=[80, 8, 8]",
            ),
            "target_shape",
        ),
        (
            (
                "check",
                PRESETS / "cellmap-3d.toml",
                "--data",
                "--set",
                f"data.path={tmp_path / 'none.csv'}",
            ),
            "cannot read the datasplit",
        ),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.code == 2, (args, result.err)
        assert message in result.err, (args, result.err)
        assert "Traceback" not in result.err
    assert not (tmp_path / "o.zarr").exists()
    broken = tmp_path / "broken.csv"
    broken.write_text(datasplit.read_text().replace("crop2/[mito]", "crop9/[mito]"))
    result = cli("check", PRESETS / "cellmap-3d.toml", "--data", "--set", f"data.path={broken}")
    assert result.code == 2 and "jrc_alpha/crop9: class mito:" in result.err
    good = cli("check", PRESETS / "cellmap-3d.toml", "--data", "--set", f"data.path={datasplit}")
    assert good.code == 0, good.err
