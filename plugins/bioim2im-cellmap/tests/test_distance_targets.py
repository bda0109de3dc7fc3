"""CellMap classes as distance targets (the layout's `target`, as cellmap-data's
DistanceTransform and SignedDistanceTransform give the toolbox's target_value_transforms): each
class's mask turned into distances over the patch, validation still compared on masks, a loss
that takes 0/1 targets refused, and a run trains on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt
from stores import PRESETS, datasplit_text
from test_patches import crops_of, patches, rows  # noqa: F401  (the datasplit's rows)
from tiny_runs import shortest_training


@pytest.mark.parametrize("dims", [3, 2])
def test_distances_are_those_of_the_masks(rows, dims):  # noqa: F811
    crops = crops_of(rows, ["crop1"])
    size = [16, 16, 16][:dims] if dims == 3 else [24, 24]
    masks = patches(crops, patch_size=size, foreground_fraction=1.0)
    for target in ("distance", "signed_distance"):
        dataset = patches(crops, patch_size=size, foreground_fraction=1.0, target=target)
        for index in range(3):
            mask = masks.sample(index)["target/seg"]
            got = dataset.sample(index)["target/seg"]
            assert got.dtype == np.float32 and got.shape == mask.shape
            assert mask.any() and (~mask.astype(bool)).any()
            for c in range(mask.shape[0]):
                inside = mask[c].astype(bool)
                expected = distance_transform_edt(inside) if inside.any() else 0 * inside
                if target == "signed_distance" and (~inside).any():
                    expected = expected - distance_transform_edt(~inside)
                np.testing.assert_allclose(got[c], expected, rtol=1e-6)
                # The mask is where the distance is positive (what sigmoid > 0.5 gives).
                np.testing.assert_array_equal(got[c] > 0, inside)
    validation = patches(crops, target="signed_distance", validation=True)
    sample = validation.sample(0)
    assert sample["truth/seg"].dtype == np.uint8
    np.testing.assert_array_equal(sample["truth/seg"], sample["target/seg"] > 0)


def test_a_distance_target_with_a_loss_for_masks_is_one_message(tmp_path: Path, cli):
    result = cli(
        "check", PRESETS / "cellmap-3d.toml", "--set", "data.layout.target=signed_distance"
    )
    assert result.code == 2 and result.err.count("error:") == 1, result.err
    text = " ".join(result.err.split())
    assert 'data.layout.target = "signed_distance"' in text and 'got "bce"' in text
    assert "mse, l1, smooth_l1" in text and "Traceback" not in result.err
    bad = cli("check", PRESETS / "cellmap-3d.toml", "--set", "data.layout.target=sdt")
    assert bad.code == 2 and "data.layout.target" in bad.err and "signed_distance" in bad.err


def test_a_run_trains_on_signed_distances(cellmap_root: Path, tmp_path: Path):
    from bioim2im.api import train

    datasplit = tmp_path / "datasplit.csv"
    datasplit.write_text(datasplit_text(cellmap_root / "data", {1: "validate", 4: "train"}))
    train(
        PRESETS / "cellmap-3d.toml",
        overrides=[
            f"data.path={datasplit}",
            'data.layout.classes=["mito", "er"]',
            "data.layout.target=signed_distance",
            "data.layout.pos_weight=false",
            'model.heads.seg.loss={name="mse"}',
            *shortest_training(2),
        ],
        run_dir=tmp_path / "run",
    )
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("val/loss" in r and np.isfinite(r["val/loss"]) for r in records)
