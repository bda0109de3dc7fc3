"""`bioim2im plan` writes, for every task and for 2D, 3D isotropic and anisotropic, tiny and
large data, a preset that validates, extends the task's preset and says why for each value it
sets; the values follow the data (patch, strides, batch, decoder limits)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from planning_data import SHAPES, write

from bioim2im.api import plan
from bioim2im.config import load_preset
from bioim2im.planning import TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = list(SHAPES)
CASES = [
    (task, kind)
    for task in TASKS
    for kind in KINDS
    if not (task == "multitask" and len(SHAPES[kind][0]) == 2)
]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Each (task, kind) dataset, written when first asked for."""
    return {}


def dataset(cache: dict, root: Path, task: str, kind: str) -> Path:
    if (task, kind) not in cache:
        n = 1 if kind.startswith("large") else 2
        cache[task, kind] = write(root / f"{task}-{kind}", task, kind, n=n)
    return cache[task, kind]


def planned_lines(text: str) -> list[tuple[str, str]]:
    """(comment above, key line) of every key line after ``extends`` (but data.path)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("extends = "))
    found = []
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if " = " in line and not line.startswith("#") and not line.startswith("path = "):
            found.append((lines[i - 1], line))
    return found


@pytest.mark.parametrize(("task", "kind"), CASES)
def test_plan_writes_a_valid_commented_preset(
    task: str, kind: str, datasets: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = dataset(datasets, tmp_path_factory.mktemp("data"), task, kind)
    output = data.parent / f"{task}-{kind}.toml"
    result = plan(data, task=task, budget_minutes=5, seconds_per_step=0.25, output=output)

    text = output.read_text()
    assert text == result.text
    preset = load_preset(output)  # validates, extends chain and all
    dims = len(SHAPES[kind][0])
    assert preset.spatial_dims == dims
    table = tomllib.loads(text)
    assert table["extends"] == TASKS[task][dims]
    assert Path(output.parent, table["data"]["path"]).resolve() == data.resolve()
    # The header says what the data are, and every planned value why it is what it is.
    assert text.startswith("# Planned by `bioim2im plan`")
    for comment, line in planned_lines(text):
        assert comment.startswith("# "), (line, text)
    choices = {c.key: c.value for c in result.plan.choices}
    assert choices["train.steps"] == int(0.9 * 5 * 60 / 0.25)
    assert preset.train.steps == choices["train.steps"]
    assert preset.train.max_minutes == 5

    # Patches fit the network and the images: multiples of the downsampling per axis, covering
    # an image axis shorter than a patch, inside a longer one.
    shape = SHAPES[kind][0]
    patch = preset.data.patch_size
    strides = preset.model.backbone.params()["strides"]
    per_axis = [[s] * dims if isinstance(s, int) else list(s) for s in strides]
    divisor = [math.prod(level[a] for level in per_axis) for a in range(dims)]
    for p, n, d in zip(patch, shape, divisor, strict=True):
        assert p % d == 0
        assert p >= n or p <= n, (patch, shape)
        assert p < n + d  # at most a divisor's worth of padding
    if kind.startswith("tiny"):
        assert all(p >= n for p, n in zip(patch, shape, strict=True))
    if kind.startswith("large"):
        assert math.prod(patch) < math.prod(shape) / 4
        assert math.prod(patch) <= 16 * 128 * 128
    if kind == "3d-aniso":
        # Z voxels 3x longer: Z is not halved at the first level.
        assert per_axis[0] == [1, 2, 2]
    if kind == "3d":
        assert per_axis[0] == [2, 2, 2]


def test_instance_plans_fit_the_decoder_to_the_objects(tmp_path: Path) -> None:
    data = write(tmp_path / "data", "instance", "3d-aniso")
    result = plan(data, task="instance", budget_minutes=2, seconds_per_step=0.5)
    preset_text = result.text
    assert "min_size" in preset_text
    (step,) = [s for s in result.plan.value("model.heads.seg.postprocess")]
    objects = result.plan.fingerprint.objects
    assert objects is not None and objects.count > 0
    assert step["name"] == "embedseg_cluster"
    assert step["min_size"] == max(3, int(0.5 * objects.volume[0]))


def test_auto_recognises_the_task_from_the_targets(tmp_path: Path) -> None:
    expected = {
        "instance": "instance",
        "segmentation": "segmentation",
        "n2v": "n2v",
        "restoration": "restoration",
        "superres": "superres",
    }
    for made, found in expected.items():
        data = write(tmp_path / made, made, "2d")
        assert plan(data, seconds_per_step=0.5).task == found


def test_without_a_budget_the_steps_are_the_presets(tmp_path: Path) -> None:
    data = write(tmp_path / "data", "segmentation", "2d")
    result = plan(data, task="segmentation")
    assert "train.steps" not in [c.key for c in result.plan.choices]
    assert result.plan.seconds_per_step is None
    assert "without a time budget" in " ".join(result.text.replace("# ", "").split())


def test_images_with_several_channels_get_a_network_that_takes_them(tmp_path: Path) -> None:
    import numpy as np

    from bioim2im.io.tiff import write_tiff

    rng = np.random.default_rng(0)
    for i in range(2):
        write_tiff(tmp_path / "IM" / f"a{i}.tif", rng.random((2, 40, 48), np.float32), axes="CYX")
        write_tiff(
            tmp_path / "GT" / f"a{i}.tif", (rng.random((40, 48)) > 0.7).astype(np.uint8), axes="YX"
        )
    result = plan(tmp_path, task="segmentation", output=tmp_path.parent / "two.toml")
    assert result.plan.value("model.in_channels") == 2
    assert load_preset(tmp_path.parent / "two.toml").model.in_channels == 2


def test_large_label_images_are_measured_on_a_central_box(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bioim2im.planning import fingerprint

    data = write(tmp_path / "data", "instance", "2d")
    monkeypatch.setattr(fingerprint, "LABEL_VOXELS", 48 * 40)  # a quarter of each image
    result = plan(data, seconds_per_step=0.5)
    assert result.task == "instance"
    target = result.plan.fingerprint.targets["GT"]
    assert target.kind == "instance" and target.objects is not None
    assert target.objects.count > 10
