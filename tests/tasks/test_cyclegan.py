"""cyclegan-2d end to end on unpaired data: transmitted light of some cells (IM/) and the
fluorescence of other cells (GT/), under other names, in other numbers and sizes. Translated
held-out inputs look like the target domain; and the unpaired layout on its own."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from task_helpers import PRESETS, images, percentile_normalized, tiny, train_and_predict

from bioim2im.config import load_preset
from bioim2im.data.datasets import training_datasets
from bioim2im.data.sources import find_splits

SMALL = [
    "data.patch_size=[64, 64]",
    "data.batch_size=4",
    "predict.roi_size=[96, 96]",
    "adversarial.discriminator={ name = 'patchgan', channels = 16, layers = 2 }",
]


@pytest.fixture
def unpaired(synthetic, tmp_path: Path) -> Callable[[int], tuple[Path, Path]]:
    """``unpaired(n_inputs)`` -> (dataset, held-out paired images of domain A)."""

    def make(n_inputs: int) -> tuple[Path, Path]:
        cells, held_out = synthetic("labelfree", (96, 96), n_images=n_inputs)
        nuclei, _ = synthetic("labelfree", (96, 128), n_images=4, n_held_out=1)
        data = tmp_path / "unpaired"
        (data / "IM").mkdir(parents=True)
        (data / "GT").mkdir()
        for path in (cells / "IM").iterdir():
            shutil.copy(path, data / "IM" / f"cells_{path.name}")
        for path in (nuclei / "GT").iterdir():
            shutil.copy(path, data / "GT" / f"nuclei_{path.stem}_b.tif")
        return data, held_out

    return make


def test_unpaired_inputs_and_targets_are_found_and_drawn_independently(
    unpaired, tmp_path: Path
) -> None:
    data, _ = unpaired(2)
    preset = load_preset(
        PRESETS / "cyclegan-2d.toml", tiny(data, 2, *SMALL, "data.val_fraction=0.5")
    )

    splits = find_splits(preset.data, preset.model.heads, run_dir=tmp_path / "run")
    assert not splits.problems
    assert (len(splits.train), len(splits.val)) == (1, 1)
    assert all(not pair.targets for pair in splits.train + splits.val)
    targets = splits.unpaired_targets["GT"]
    assert (len(targets.train), len(targets.val)) == (2, 2)
    recorded = json.loads((tmp_path / "run" / "split.json").read_text())
    assert recorded["unpaired_targets"]["GT"]["train"].keys() == {p.name for p in targets.train}

    train, val = training_datasets(preset, tmp_path / "run")
    assert val is not None
    first, again = train[5], train[5]
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert first["target/translated"].shape == first["image"].shape == (1, 64, 64)
    # Every patch comes from the one training input, its target from patches of two others.
    assert len({float(train[i]["target/translated"].mean()) for i in range(12)}) == 12


def test_check_data_reports_target_files_without_pairing_them(cli, unpaired) -> None:
    data, _ = unpaired(6)
    result = cli("check", PRESETS / "cyclegan-2d.toml", "--data", "--set", f"data.path={data}")
    assert result.code == 0, result.err
    assert "no matching" not in result.err
    assert " GT " in result.err and "dataset is usable" in result.err


@pytest.mark.slow
def test_cyclegan_2d_translates_towards_the_target_domain(unpaired, tmp_path: Path) -> None:
    data, held_out = unpaired(6)
    run = train_and_predict("cyclegan-2d", tiny(data, 40, *SMALL), held_out, tmp_path)

    records = [
        json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [r for r in records if "loss/cycle_a" in r]
    assert losses[-1]["loss/cycle_a"] < losses[0]["loss/cycle_a"]
    assert np.isfinite([[r["loss/adv_g"], r["loss/adv_d"]] for r in losses]).all()
    assert "val/loss" in records[-1]

    # Scored against the true fluorescence of the held-out cells, normalised as training
    # normalised both domains: how far the intensity distributions are, before and after.
    predictions = images(run.predictions, "_translated")
    inputs, truths = images(held_out / "IM"), images(held_out / "GT")
    for name, truth in truths.items():
        truth = percentile_normalized(truth, lower=1.0, upper=99.8)
        source = percentile_normalized(inputs[name], lower=1.0, upper=99.8)
        after = wasserstein_distance(predictions[name].ravel(), truth.ravel())
        before = wasserstein_distance(source.ravel(), truth.ravel())
        # 40 steps learn the target domain's look (dark background, bright spots), not yet
        # which cells are nuclei.
        assert after < 0.7 * before, (name, after, before)
        assert np.abs(predictions[name] - truth).mean() < 0.85 * np.abs(source - truth).mean()
