"""CellMap training patches: scale selection, per-class masks, mutual exclusion, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stores import CROPS, datasplit_text

from bioim2im.data.targets import split_valid
from bioim2im.io.multiscale import open_levels
from bioim2im_cellmap.classes import exclusions
from bioim2im_cellmap.crops import crop_weights, open_crops, pos_weights
from bioim2im_cellmap.datasplit import read_datasplit
from bioim2im_cellmap.patches import CellMapPatches

CLASSES = ["mito", "nuc", "er"]


@pytest.fixture(scope="module")
def rows(cellmap_root: Path, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("split") / "datasplit.csv"
    path.write_text(
        datasplit_text(cellmap_root / "data", {1: "train", 2: "train", 3: "train", 4: "validate"})
    )
    return {row.name: row for row in read_datasplit(path)}


def crops_of(rows, names, scale=(8.0, 8.0, 8.0), target=None, **options):
    opened = open_crops(
        [rows[n] for n in names],
        CLASSES,
        input_scale=scale,
        target_scale=target or scale,
        **options,
    )
    assert not opened.problems
    return opened.crops


def patches(crops, **options) -> CellMapPatches:
    defaults = {
        "classes": CLASSES,
        "head": "seg",
        "patch_size": [16, 16, 16],
        "input_scale": [8, 8, 8],
    }
    return CellMapPatches(crops, **{**defaults, **options})


def test_a_class_missing_from_a_crop_gets_no_gradient_and_the_others_do(rows):
    """Crop 2 annotates mito only: nuc and er must not pull the network either way there."""
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    dataset = patches(crops_of(rows, ["crop2"]), foreground_fraction=1.0)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(4)])
    weight = batch["weight/seg"]
    assert weight.shape == (4, 3, 16, 16, 16)
    assert weight[:, 0].sum() > 0 and weight[:, 1:].sum() == 0
    for spec in (
        {"name": "bce"},
        {"name": "dice_ce", "sigmoid": True},
        {"name": "focal", "sigmoid": True},
    ):
        logits = torch.randn(4, 3, 16, 16, 16, requires_grad=True)
        name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        loss = registry.get("loss", name).build(params, spatial_dims=3)
        loss = loss(logits, batch["target/seg"], weight)
        loss.backward()
        assert logits.grad[:, 1:].abs().max() == 0, spec
        assert logits.grad[:, 0].abs().sum() > 0, spec


def test_unannotated_values_mask_their_own_channel_only():
    target = np.zeros((3, 4, 4), dtype=np.float32)
    target[0, 1, 1] = 1
    target[1, :2] = np.nan  # class 1 unannotated in the top rows
    target[2, 3, 3] = 255  # ignore value in class 2
    masked, weight = split_valid(target, 255, None, per_channel=True)
    assert weight.shape == (3, 4, 4)
    np.testing.assert_array_equal(weight[0], 1)
    np.testing.assert_array_equal(weight[1, :2], 0)
    np.testing.assert_array_equal(weight[1, 2:], 1)
    assert weight[2, 3, 3] == 0 and weight[2].sum() == 15
    assert np.isfinite(masked).all() and masked[0, 1, 1] == 1
    # The single-channel rule as before: a pixel unannotated anywhere is dropped for all.
    _, shared = split_valid(target, 255, None)
    assert shared.shape == (1, 4, 4) and shared.sum() == 16 - 8 - 1


def test_mutual_exclusion_reveals_negatives(rows):
    crops = crops_of(rows, ["crop2"])
    plain = patches(crops, foreground_fraction=1.0)
    exclusive = patches(crops, foreground_fraction=1.0, excluded_by=exclusions(CLASSES))
    for i in range(3):
        a, b = plain.sample(i), exclusive.sample(i)
        np.testing.assert_array_equal(a["image"], b["image"])
        mito = b["target/seg"][0] > 0
        assert mito.any()
        # nuc and er can never be inside a mitochondrion: known negatives there, unknown elsewhere.
        for c in (1, 2):
            np.testing.assert_array_equal(b["weight/seg"][c] > 0, mito)
            assert b["target/seg"][c].sum() == 0
            assert a["weight/seg"][c].sum() == 0
        np.testing.assert_array_equal(a["weight/seg"][0], b["weight/seg"][0])


def test_exclusion_table_follows_the_challenges_classes():
    table = exclusions(["mito", "er", "nuc", "cell", "ecs", "mito_mem", "ne", "unknown"])
    assert table["mito"] == {"er", "nuc", "ecs", "ne"}
    assert "nuc" not in table["er"] and "er" not in table["nuc"]  # the nuclear envelope
    assert "ne" not in table["er"] and "ne" not in table["nuc"]
    assert table["cell"] == {"ecs"}  # a cell holds every organelle
    assert "mito" not in table["mito_mem"] and "er" in table["mito_mem"]
    assert table["unknown"] == set()


def test_scale_selection_reads_the_nearest_levels(rows, cellmap_root: Path):
    row = rows["crop1"]
    # Labels asked at 4 nm: crop 1's s0, finer than the 8 nm input (raw s1).
    (crop,) = crops_of(rows, ["crop1"], scale=(8.0, 8.0, 8.0), target=(4.0, 4.0, 4.0))
    assert crop.raw.name == "s1" and crop.raw.scale == (8.0,) * 3
    assert {name: level.name for name, level in crop.labels.items()} == {
        "mito": "s0",
        "nuc": "s0",
        "er": "s0",
    }
    dataset = patches([crop], validation=True)
    sample = dataset.sample(0)
    # The input is a slice of raw s1 (the patch lies on its grid), unnormalised here.
    raw = open_levels(row.raw)[1].read()
    start = np.rint(
        (dataset._first_voxel(crop, dataset._centre(crop, np.random.default_rng([0, 0]))) - 4) / 8
    ).astype(int)
    np.testing.assert_array_equal(sample["image"][0], raw[tuple(slice(s, s + 16) for s in start)])
    # Each input voxel takes the label voxel its centre falls in (on an edge: the upper one).
    level = crop.labels["mito"]
    assert level.scale == (4.0,) * 3
    centres = [4 + 8 * (s + np.arange(16)) for s in start]
    index = [np.floor((c - lo) / 4).astype(int) for c, lo in zip(centres, level.start, strict=True)]
    expected = level.read()[np.ix_(*index)] > 0
    np.testing.assert_array_equal(sample["target/seg"][0], expected)


def test_finer_input_than_the_labels(rows):
    (crop,) = crops_of(rows, ["crop2"], scale=(4.0, 4.0, 4.0))
    assert crop.raw.name == "s0" and crop.labels["mito"].scale == (8.0,) * 3
    sample = patches([crop], input_scale=[4, 4, 4], validation=True).sample(0)
    mito = sample["target/seg"][0]
    # Each 8 nm label voxel is 2x2x2 input voxels: the patch's pairs agree (it starts on an
    # 8 nm voxel edge or mid-voxel; check along the grid of whichever it is).
    blocks = [mito[a::2, b::2, c::2] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    assert sum(np.array_equal(blocks[0], blk) for blk in blocks) >= 1


def test_crops_annotated_coarser_than_asked_can_be_skipped(rows):
    opened = open_crops(
        [rows["crop4"]], CLASSES, input_scale=(8, 8, 8), target_scale=(8, 8, 8), skip_coarser=True
    )
    assert opened.crops == [] and not opened.problems
    assert any("crop4: class mito treated as unannotated" in note for note in opened.notes)
    kept = open_crops([rows["crop4"]], CLASSES, input_scale=(8, 8, 8), target_scale=(8, 8, 8))
    assert [c.name for c in kept.crops] == ["jrc_beta/crop4"]


def test_supervision_is_the_central_target_shape(rows):
    dataset = patches(crops_of(rows, ["crop1"]), target_shape=[8, 8, 8], validation=True)
    weight = dataset.sample(1)["weight/seg"]
    inside = np.zeros((16, 16, 16), dtype=bool)
    inside[4:12, 4:12, 4:12] = True
    assert (weight[:, ~inside] == 0).all()
    assert (weight[:, inside] > 0).all()  # crop 1 annotates all three classes, and is large


def test_patches_are_a_pure_function_of_seed_and_index(rows):
    crops = crops_of(rows, ["crop1", "crop2", "crop3"])
    probabilities = crop_weights(crops, CLASSES)
    a = patches(
        crops, seed=5, crop_probabilities=probabilities, pos_weight=pos_weights(crops, CLASSES)
    )
    b = patches(
        crops_of(rows, ["crop1", "crop2", "crop3"]),
        seed=5,
        crop_probabilities=probabilities,
        pos_weight=pos_weights(crops, CLASSES),
    )
    for i in (0, 7, 1000):
        sa, sb = a.sample(i), b.sample(i)
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key])
    assert not np.array_equal(a.sample(1)["image"], a.sample(2)["image"])
    other = patches(crops, seed=6, crop_probabilities=probabilities)
    assert not np.array_equal(a.sample(1)["image"], other.sample(1)["image"])


def test_class_counts_give_pos_weight_and_crop_weights(rows):
    crops = crops_of(rows, ["crop1", "crop2", "crop3"])
    # Independently: read each chosen label array and count.
    counts = {c: [] for c in CLASSES}
    for crop in crops:
        for name, level in crop.labels.items():
            values = level.read()
            counts[name].append((crop.name, int((values > 0).sum()), values.size))
    expected_pos = [
        (sum(t for _, _, t in counts[c]) - sum(f for _, f, _ in counts[c]))
        / sum(f for _, f, _ in counts[c])
        for c in CLASSES
    ]
    np.testing.assert_allclose(pos_weights(crops, CLASSES), expected_pos, rtol=1e-6)
    shares = np.zeros(len(crops))
    names = [c.name for c in crops]
    for c in CLASSES:
        total = sum(f for _, f, _ in counts[c])
        for crop_name, f, _ in counts[c]:
            shares[names.index(crop_name)] += f / total / len(CLASSES)
    np.testing.assert_allclose(
        crop_weights(crops, CLASSES), 0.9 * shares + 0.1 / len(crops), rtol=1e-6
    )
    # The positives of each class weigh its pos_weight, the negatives 1, unannotated 0.
    weights = pos_weights(crops, CLASSES)
    sample = patches(crops, pos_weight=weights, foreground_fraction=1.0).sample(3)
    for c in range(3):
        w, t = sample["weight/seg"][c], sample["target/seg"][c]
        assert set(np.unique(w[t > 0])) <= {np.float32(weights[c])}
        assert set(np.unique(w[t == 0])) <= {0.0, 1.0}


def test_training_draws_follow_the_crop_weights(rows):
    crops = crops_of(rows, ["crop1", "crop2", "crop3"])
    probabilities = np.array([0.7, 0.1, 0.2])
    dataset = patches(crops, crop_probabilities=probabilities)
    drawn = [dataset._crop_for(i, np.random.default_rng([0, i])).name for i in range(3000)]
    frequencies = [drawn.count(c.name) / len(drawn) for c in crops]
    np.testing.assert_allclose(frequencies, probabilities, atol=0.03)


def test_two_dimensional_patches_are_planes(rows):
    dataset = patches(crops_of(rows, ["crop3"]), patch_size=[24, 24], foreground_fraction=0.0)
    sample = dataset.sample(0)
    assert sample["image"].shape == (1, 24, 24)
    assert sample["target/seg"].shape == sample["weight/seg"].shape == (3, 24, 24)
    assert sample["weight/seg"][0].sum() == 0  # crop 3 does not annotate mito


def test_spec_sanity():
    assert {c.number for c in CROPS} == {1, 2, 3, 4}


def test_crops_held_in_memory_give_the_same_patches(rows):
    names = ["crop1", "crop2", "crop3"]
    lazy = crops_of(rows, names)
    context = (8 * 8.0,) * 3  # half a 16-voxel patch at 8 nm
    held = crops_of(rows, names, memory=1 << 30, context=context)
    assert all(c.raw.held and all(level.held for level in c.labels.values()) for c in held)
    # The raw held is the crop plus the context (and a voxel), not the whole volume: crop 2
    # covers 160..352 nm, so 88..424 nm, clipped to the volume's 384 nm.
    assert held[1].raw.shape == (37, 37, 37) and held[1].raw.translation == (92.0,) * 3
    assert held[1].labels["mito"].shape == (24, 24, 24)
    options = {"foreground_fraction": 0.5, "excluded_by": exclusions(CLASSES)}
    a, b = patches(lazy, **options), patches(held, **options)
    for i in range(12):
        sa, sb = a.sample(i), b.sample(i)
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key], err_msg=f"{i} {key}")
    # A budget for the smallest crop only: the others stay in their stores.
    sizes = [c.raw.read().nbytes + sum(v.read().nbytes for v in c.labels.values()) for c in held]
    partial = crops_of(rows, names, memory=min(sizes), context=context)
    assert sum(c.raw.held for c in partial) == 1


def test_nan_labels_are_unannotated_for_their_class_only():
    from bioim2im.io.multiscale import Level
    from bioim2im_cellmap.crops import Crop
    from bioim2im_cellmap.datasplit import CropRow

    raw = Level.in_memory(np.full((8, 8, 8), 100, np.uint8), (8, 8, 8), (4, 4, 4))
    mito = np.zeros((8, 8, 8), np.float32)
    mito[:, :, 4:] = 1
    mito[:4] = np.nan  # the top half unknown for mito
    er = np.ones((8, 8, 8), np.uint8)
    labels = {
        "mito": Level.in_memory(mito, (8, 8, 8), (4, 4, 4)),
        "er": Level.in_memory(er, (8, 8, 8), (4, 4, 4)),
    }
    row = CropRow("train", "a.zarr", "raw", "a.zarr", "crop1", ("mito", "er"))
    crop = Crop(row, raw, labels, (np.zeros(3), np.full(3, 64.0)))
    sample = patches([crop], patch_size=[8, 8, 8], validation=True).sample(0)
    weight, target = sample["weight/seg"], sample["target/seg"]
    np.testing.assert_array_equal(weight[0, :4], 0)
    np.testing.assert_array_equal(weight[0, 4:], 1)
    np.testing.assert_array_equal(weight[2], 1)  # er annotated everywhere
    np.testing.assert_array_equal(weight[1], 0)  # nuc not annotated
    np.testing.assert_array_equal(target[0, 4:], (mito[4:] > 0).astype(np.uint8))
    assert target[0, :4].sum() == 0
