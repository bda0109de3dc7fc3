"""`bioim2im plan` on the command line, and `data.plan = true` in a preset that is trained:
what a user sees, what is written, and one message with exit status 2 for every mistake."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from planning_data import write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))
from hostile_helpers import assert_user_error, invoke

from bioim2im.config import load_preset


@pytest.fixture(scope="module")
def tiny_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("plan") / "data", "segmentation", "tiny-2d", n=3)


def test_plan_times_steps_here_and_writes_the_preset(tiny_2d: Path, tmp_path: Path) -> None:
    output = tmp_path / "mine.toml"
    result = invoke("plan", tiny_2d, "--budget", "0.5", "-o", output)
    assert result.code == 0, result
    assert f"bioim2im train {output}" in result.err
    preset = load_preset(output)
    # Steps measured on this machine fill the budget; the file says so.
    assert "measured on this machine" in output.read_text()
    assert preset.train.max_minutes == 0.5
    assert preset.train.steps is not None and preset.train.steps >= 50
    # Images of 13 x 9 pixels: the patch covers them, rounded up to the network's divisor.
    assert preset.data.patch_size == [14, 10]


def test_without_output_the_preset_is_printed(tiny_2d: Path, tmp_path: Path) -> None:
    result = invoke("plan", tiny_2d, "--task", "segmentation", cwd=tmp_path)
    assert result.code == 0, result
    assert result.out.startswith("# Planned by `bioim2im plan`")
    assert 'extends = "segmentation-2d"' in result.out
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_with_overwrite(tiny_2d: Path, tmp_path: Path) -> None:
    output = tmp_path / "mine.toml"
    output.write_text("# mine\n")
    assert_user_error(invoke("plan", tiny_2d, "-o", output), str(output), "--overwrite")
    assert output.read_text() == "# mine\n"
    assert invoke("plan", tiny_2d, "-o", output, "--overwrite").code == 0
    load_preset(output)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.toml"]  # no work files left


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--task", "segmentaton"], ["--task", "segmentation"]),
        (["--task", "multitask"], ["FLUO"]),
        (["--budget", "0"], ["--budget"]),
        (["--budget", "-3"], ["--budget"]),
        (["--voxel-size", "1,x,2"], ["--voxel-size"]),
        (["--voxel-size", "0,1,1"], ["--voxel-size"]),
        (["--step-seconds", "0"], ["--step-seconds"]),
        (["--device", "tpu"], ["--device"]),
    ],
)
def test_bad_options_are_one_message(
    tiny_2d: Path, tmp_path: Path, args: list[str], mentions: list[str]
) -> None:
    output = tmp_path / "out.toml"
    assert_user_error(invoke("plan", tiny_2d, *args, "-o", output), *mentions)
    assert not output.exists()


def test_bad_data_and_outputs_are_one_message(tiny_2d: Path, tmp_path: Path) -> None:
    assert_user_error(invoke("plan", tmp_path / "nothing"), "nothing")
    (tmp_path / "empty" / "IM").mkdir(parents=True)
    assert_user_error(invoke("plan", tmp_path / "empty", "--task", "n2v"), "empty")
    assert_user_error(invoke("plan", tiny_2d, "-o", tmp_path), "directory")
    assert_user_error(invoke("plan", tiny_2d, "-o", tmp_path / "no" / "x.toml"), "not a folder")
    manifest = tmp_path / "train.csv"
    manifest.write_text("IM,GT\n")
    assert_user_error(invoke("plan", manifest, "-o", manifest, "--overwrite"), "train.csv")
    assert manifest.read_text() == "IM,GT\n"


def test_cuda_without_a_gpu_is_one_message(tiny_2d: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert_user_error(invoke("plan", tiny_2d, "--device", "cuda"), "--device cuda", "GPU")


def test_training_a_preset_with_data_plan_plans_it_first(tmp_path: Path) -> None:
    from bioim2im.api import train

    data = write(tmp_path / "data", "segmentation", "3d-aniso", n=3)
    preset = tmp_path / "mine.toml"
    preset.write_text(
        'extends = "segmentation-3d"\n'
        "[data]\n"
        f'path = "{data}"\n'
        "plan = true\n"
        "num_workers = 0\n"
        "[model.backbone]\n"
        'name = "unet"\n'
        "channels = [4, 8, 16]\n"
        "strides = [2, 2]\n"
        "num_res_units = 0\n"
        "[train]\n"
        "max_minutes = 0.05\n"
        "[logging]\n"
        'progress = "lines"\n'
        "snapshots = false\n"
    )
    run = tmp_path / "run"
    result = train(preset, overrides=["model.features=4"], run_dir=run)

    saved = load_preset(run / "preset.toml")
    assert saved.data.plan is False  # resuming continues the plan, never plans again
    # Z voxels 3x longer: Z kept at the first level; the patch covers the 12 x 64 x 56 images.
    assert list(saved.model.backbone.params()["strides"][0]) == [1, 2, 2]
    assert list(saved.model.backbone.params()["channels"][:2]) == [4, 8]
    assert saved.data.patch_size[0] == 12
    # --set wins over the plan; the plan over the preset.
    assert saved.model.features == 4
    assert result.total_steps == saved.train.steps
    plan_file = (run / "plan.toml").read_text()
    assert plan_file.startswith("# Planned by `bioim2im plan`")
    assert "# " in plan_file.split("patch_size =")[0].splitlines()[-1]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records, "nothing trained"


def test_data_plan_with_several_devices_is_refused(tmp_path: Path) -> None:
    data = write(tmp_path / "data", "segmentation", "tiny-2d")
    preset = tmp_path / "mine.toml"
    preset.write_text(f'extends = "segmentation-2d"\n[data]\npath = "{data}"\nplan = true\n')
    result = invoke("train", preset, "--devices", "2", "--run-dir", tmp_path / "run")
    assert_user_error(result, "data.plan", "bioim2im plan")
    assert not (tmp_path / "run").exists()
