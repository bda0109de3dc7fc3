"""What a front end (the napari plugin, a notebook) needs from the Python API: progress of a
prediction and a way to stop it, each logged training record and a way to stop training with a
checkpoint, the presets by name, and a run's validation images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bioim2im import api
from bioim2im.errors import UserError
from bioim2im.io import open_image
from tiny_presets import DROP, tiny_unet_toml

# The tiny preset (tests/tiny_presets.py): a record every step, checkpoints every 4 of 8.
TINY = {
    "train.steps": 8,
    "train.log_every": 1,
    "train.val_every": 8,
    "train.checkpoint_every": 4,
    "predict": DROP,
}


class Stop(Exception):
    """What a front end's callback raises to stop a prediction."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bioim2im.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("nuclei")
    write_dataset(root, kind="nuclei", n_images=5, shape=(64, 64), seed=0, label_kind="semantic")
    return root


@pytest.fixture(scope="module")
def preset(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "tiny.toml"
    path.write_text(tiny_unet_toml(data, TINY), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(preset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return api.train(preset, run_dir=tmp_path_factory.mktemp("runs") / "run").run_dir


@pytest.fixture(scope="module")
def image(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96 x 128 image: 12 blocks of 32 x 32 with ``predict.block_size=[32, 32]``."""
    from bioim2im.io import write_image

    rng = np.random.default_rng(1)
    array = rng.random((96, 128)).astype(np.float32)
    return write_image(tmp_path_factory.mktemp("image") / "big.tif", array, axes="YX")


SMALL_BLOCKS = ["predict.block_size=[32, 32]"]


def test_predict_tells_each_block_done(run: Path, image: Path) -> None:
    seen: list[tuple[int, int]] = []
    outputs = api.predict(
        run, open_image(image), overrides=SMALL_BLOCKS, on_progress=lambda *a: seen.append(a)
    )
    assert seen == [(i, 12) for i in range(1, 13)]
    whole = api.predict(run, np.asarray(open_image(image).read()))
    np.testing.assert_array_equal(outputs["seg"], whole["seg"])


def test_an_array_is_one_block(run: Path) -> None:
    seen: list[tuple[int, int]] = []
    api.predict(run, np.zeros((64, 64), np.float32), on_progress=lambda *a: seen.append(a))
    assert seen == [(1, 1)]


def test_a_raising_callback_stops_the_prediction(run: Path, image: Path) -> None:
    seen: list[int] = []

    def stop_after_two(done: int, total: int) -> None:
        seen.append(done)
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        api.predict(run, open_image(image), overrides=SMALL_BLOCKS, on_progress=stop_after_two)
    assert seen == [1, 2]


def test_stopped_prediction_files_publish_nothing_and_the_same_call_finishes(
    run: Path, image: Path, tmp_path: Path
) -> None:
    def stop(done: int, total: int) -> None:
        if done == 3:
            raise Stop

    out = tmp_path / "out"
    with pytest.raises(Stop):
        api.predict_files(run, image, out, overrides=SMALL_BLOCKS, progress=False, on_progress=stop)
    assert not (out / "big.ome.zarr").exists()
    seen: list[int] = []
    summary = api.predict_files(
        run,
        image,
        out,
        overrides=SMALL_BLOCKS,
        progress=False,
        on_progress=lambda done, total: seen.append(done),
    )
    assert summary.results[0].blocks.resumed == 3
    assert seen == list(range(1, 10))  # the 9 blocks left
    container = out / "big.ome.zarr"  # a mask is a label image: labels/seg
    seg = container / "labels" / "seg" if (container / "labels").exists() else container / "seg"
    written = np.asarray(open_image(seg).read())
    expected = api.predict(run, open_image(image))["seg"]
    np.testing.assert_array_equal(written, expected)


def test_on_metrics_gets_every_logged_record(preset: Path, tmp_path: Path) -> None:
    records: list[dict[str, float]] = []
    result = api.train(
        preset, run_dir=tmp_path / "run", on_metrics=lambda r: records.append(dict(r))
    )
    logged = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [r["step"] for r in logged]
    assert [r["loss"] for r in records if "loss" in r] == [r["loss"] for r in logged if "loss" in r]
    assert any("val/loss" in r for r in records)


def test_should_stop_ends_training_with_a_checkpoint_that_resumes(
    preset: Path, tmp_path: Path
) -> None:
    asked: list[int] = []

    def after_three() -> bool:
        asked.append(1)
        return len(asked) >= 3

    result = api.train(preset, run_dir=tmp_path / "run", should_stop=after_three)
    assert (result.step, result.total_steps, result.stop_reason) == (3, 8, "stop requested")
    assert (result.run_dir / "checkpoints" / "last.pt").is_file()
    assert json.loads((result.run_dir / "result.json").read_text())["step"] == 3
    resumed = api.train(resume=result.run_dir)
    assert (resumed.step, resumed.stop_reason) == (8, None)


def test_callbacks_need_training_in_this_process(preset: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="devices"):
        api.train(preset, run_dir=tmp_path / "run", devices=2, should_stop=lambda: False)


def test_list_presets_names_the_shipped_presets() -> None:
    rows = {row["name"]: row for row in api.list_presets()}
    assert {"segmentation-2d", "instance-2d", "n2v-2d"} <= set(rows)
    assert rows["instance-2d"]["description"]
    assert Path(rows["instance-2d"]["path"]).is_file()


def test_validation_images_are_those_the_run_validated_on(run: Path, data: Path) -> None:
    split = json.loads((run / "split.json").read_text())
    found = api.validation_images(run)
    assert {v.name: str(v.image) for v in found} == split["val"]
    for image in found:
        assert image.targets == {"seg": data / "GT" / image.image.name}


def test_validation_images_of_a_folder_that_is_no_run(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"not a bioim2im run directory"):
        api.validation_images(tmp_path)
