"""Patch datasets: deterministic by index, padded, oversampled, targets encoded per task."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bioim2im.config import Preset, validate
from bioim2im.data.dataset import PatchDataset, epoch_length
from bioim2im.data.datasets import training_datasets
from bioim2im.data.loader import make_loader, sample_indices
from bioim2im.errors import UserError
from bioim2im.io.tiff import write_tiff
from bioim2im.plugin.manager import get_registry

SEG = {"name": "conv", "loss": {"name": "dice_ce", "sigmoid": True}}


def preset(
    path: Path, heads: dict[str, Any] | None = None, patch: list[int] | None = None, **data: Any
) -> Preset:
    table = {
        "data": {
            "path": str(path),
            "patch_size": patch or [16, 16],
            "val_fraction": 0.0,
            "cache": "memory",
            **data,
        },
        "model": {"backbone": {"name": "unet"}, "heads": heads or {"seg": SEG}},
        "train": {"seed": 1},
    }
    return validate(table, get_registry(), "test preset")


def datasets(p: Preset, run_dir: Path | None = None) -> tuple[PatchDataset, PatchDataset | None]:
    return training_datasets(p, run_dir, check=False)


def write(
    root: Path,
    name: str,
    image: np.ndarray,
    target: np.ndarray,
    *,
    axes: str = "YX",
    cost_map: np.ndarray | None = None,
    voxel_size: list[float] | None = None,
) -> None:
    write_tiff(
        root / "IM" / f"{name}.tif", image, axes=axes, voxel_size=voxel_size, compression="none"
    )
    write_tiff(
        root / "GT" / f"{name}.tif",
        target,
        axes=axes.replace("C", ""),
        voxel_size=voxel_size,
        compression="none",
    )
    if cost_map is not None:
        write_tiff(
            root / "CM" / f"{name}.tif", cost_map, axes=axes.replace("C", ""), compression="none"
        )


def random_pair(
    shape: tuple[int, ...], seed: int, classes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, shape).astype(np.uint16)
    image = (labels * 100 + rng.normal(0, 10, shape)).astype(np.float32)
    return image, labels


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for i in range(3):
        write(root, f"img_{i}", *random_pair((40, 48), seed=i))
    return root


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_index_same_sample_different_index_different(dataset_dir: Path) -> None:
    p = preset(
        dataset_dir, augment=[{"name": "flip"}, {"name": "rot90"}, {"name": "gaussian_noise"}]
    )
    train, _ = datasets(p)
    fresh, _ = datasets(p)
    assert same(train[7], train[7]) and same(train[7], fresh[7])
    assert same(train[1000], fresh[1000])  # indices past one epoch are later epochs
    assert not same(train[7], train[8])
    sample = train[0]
    assert sorted(sample) == ["image", "target/seg", "weight/seg"]
    assert all(v.dtype == torch.float32 and v.shape == (1, 16, 16) for v in sample.values())


def test_an_epoch_visits_every_image_patches_per_image_times(dataset_dir: Path) -> None:
    train, _ = datasets(preset(dataset_dir, patches_per_image=5))
    assert len(train) == 15 and train.epoch_length(4) == epoch_length(3, 5, 4) == 4
    visits = [train._entry_for(i) for i in range(30)]
    assert [visits[:15].count(e) for e in range(3)] == [5, 5, 5]
    assert visits[:15] != visits[15:]  # shuffled anew each epoch


def test_small_images_are_padded_reflect_for_images_zero_for_targets(tmp_path: Path) -> None:
    image, labels = random_pair((10, 12), seed=0)
    write(tmp_path, "small", image, np.ones_like(labels))
    train, _ = datasets(preset(tmp_path, foreground_fraction=0.0))
    sample = train[0]
    assert sample["image"].shape == (1, 16, 16)
    assert sample["weight/seg"].sum() == 10 * 12
    assert torch.equal(sample["target/seg"], sample["weight/seg"])
    assert (sample["image"][sample["weight/seg"] == 0] != 0).any()  # reflected, not zeros
    with pytest.raises(
        UserError, match=r"smaller than data.patch_size \[16, 16\].*small.tif \(10x12\)"
    ):
        datasets(preset(tmp_path, pad=False))


def test_foreground_fraction_centres_patches_on_labels(tmp_path: Path) -> None:
    labels = np.zeros((200, 200), np.uint8)
    labels[100:104, 60:64] = 1
    write(
        tmp_path, "sparse", np.random.default_rng(0).random((200, 200)).astype(np.float32), labels
    )
    for fraction in (0.0, 0.5):
        train, _ = datasets(preset(tmp_path, foreground_fraction=fraction))
        hits = np.mean([bool(train[i]["target/seg"].any()) for i in range(400)])
        chance = (16 + 3) ** 2 / (200 - 15) ** 2  # uniform patches touching the 4x4 object
        assert abs(hits - (fraction + (1 - fraction) * chance)) < 0.07


def test_min_foreground_rejects_empty_patches(tmp_path: Path) -> None:
    labels = np.zeros((100, 100), np.uint8)
    labels[:50, :50] = 1
    write(tmp_path, "half", np.random.default_rng(0).random((100, 100)).astype(np.float32), labels)
    train, _ = datasets(preset(tmp_path, foreground_fraction=0.0, min_foreground=0.2))
    fractions = [float(train[i]["target/seg"].mean()) for i in range(50)]
    assert min(fractions) >= 0.2


def test_class_balanced_sampling_picks_classes_equally(tmp_path: Path) -> None:
    labels = np.zeros((120, 120), np.uint8)
    labels[:, :60] = 1
    labels[100:104, 100:104] = 2  # rare
    write(
        tmp_path, "classes", np.random.default_rng(0).random((120, 120)).astype(np.float32), labels
    )
    heads = {"seg": {**SEG, "out_channels": 3}}
    train, _ = datasets(preset(tmp_path, heads, foreground_fraction=1.0))
    balanced = PatchDataset(
        train.entries, train.prep, patch_size=(8, 8), foreground_fraction=1.0, class_balanced=True
    )
    rare = np.mean([bool((balanced[i]["target/seg"] == 2).any()) for i in range(200)])
    assert 0.35 < rare < 0.65


@pytest.mark.parametrize(
    ("task", "channels", "expected"),
    [
        ("semantic", 1, lambda t: [t > 0]),
        ("semantic", 3, lambda t: [t]),
        ("instance", 1, lambda t: [t > 0]),
    ],
)
def test_label_targets_per_task(tmp_path: Path, task: str, channels: int, expected: Any) -> None:
    image, labels = random_pair((16, 16), seed=0, classes=3)
    write(tmp_path, "a", image, labels)
    train, _ = datasets(preset(tmp_path, {"seg": {**SEG, "task": task, "out_channels": channels}}))
    sample = train[0]
    want = np.stack(expected(labels.astype(np.float32))).astype(np.float32)
    assert np.array_equal(sample["target/seg"].numpy(), want)


def test_instance_boundaries_as_channels_or_classes(tmp_path: Path) -> None:
    labels = np.zeros((16, 16), np.uint16)
    labels[2:8, 2:8] = 1
    labels[2:8, 8:14] = 2  # touching object
    write(tmp_path, "a", np.random.default_rng(0).random((16, 16)).astype(np.float32), labels)
    two, _ = datasets(preset(tmp_path, {"seg": {**SEG, "task": "instance", "out_channels": 2}}))
    foreground, boundary = two[0]["target/seg"].numpy()
    assert np.array_equal(foreground, labels > 0)
    assert boundary[2:8, 7].all() and boundary[2:8, 8].all()  # the touching edge, on both sides
    assert not boundary[4:6, 4:6].any() and not boundary[labels == 0].any()
    three, _ = datasets(preset(tmp_path, {"seg": {**SEG, "task": "instance", "out_channels": 3}}))
    classes = three[0]["target/seg"].numpy()[0]
    assert np.array_equal(classes, foreground + boundary)
    with pytest.raises(UserError, match="instance head has 1"):
        datasets(preset(tmp_path, {"seg": {**SEG, "task": "instance", "out_channels": 4}}))


def test_regression_target_is_normalised(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write(
        tmp_path,
        "a",
        rng.random((16, 16)).astype(np.float32),
        rng.normal(50, 5, (16, 16)).astype(np.float32),
    )
    heads = {"fluo": {"name": "conv", "task": "regression", "loss": {"name": "mse"}}}
    target = datasets(preset(tmp_path, heads))[0][0]["target/fluo"]
    assert abs(float(target.mean())) < 1e-4 and abs(float(target.std(unbiased=False)) - 1) < 1e-3
    heads["fluo"]["target_normalize"] = {"name": "fixed_range", "min": 0.0, "max": 100.0}
    target = datasets(preset(tmp_path, heads))[0][0]["target/fluo"]
    assert 0.3 < float(target.mean()) < 0.7


def test_cost_map_ignore_value_and_nan_give_zero_weight(tmp_path: Path) -> None:
    labels = np.ones((16, 16), np.float32)
    labels[0, :] = 255  # unannotated
    labels[1, 0] = np.nan
    cost = np.full((16, 16), 2.0, np.float32)
    cost[:, -1] = 0.0
    write(
        tmp_path,
        "a",
        np.random.default_rng(0).random((16, 16)).astype(np.float32),
        labels,
        cost_map=cost,
    )
    heads = {"seg": {**SEG, "out_channels": 2, "ignore_value": 255}}
    sample = datasets(preset(tmp_path, heads))[0][0]
    weight, target = sample["weight/seg"][0].numpy(), sample["target/seg"][0].numpy()
    assert (weight[0] == 0).all() and weight[1, 0] == 0 and (weight[:, -1] == 0).all()
    assert (weight[2:, :-1] == 2.0).all()
    assert (target[0] == 0).all() and target[1, 0] == 0 and np.isfinite(target).all()


def test_validation_patches_are_fixed_and_carry_the_truth(
    dataset_dir: Path, tmp_path: Path
) -> None:
    write(tmp_path / "val", "v", *random_pair((40, 48), seed=9))
    p = preset(
        dataset_dir,
        val_path=str(tmp_path / "val"),
        augment=[{"name": "gaussian_noise", "prob": 1.0}],
    )
    _, val = datasets(p)
    assert val is not None and len(val) == 4  # one image, patches_per_image = 4
    sample = val[2]
    assert sorted(sample) == ["box/seg", "image", "target/seg", "truth/seg", "weight/seg"]
    # The image fills the patch: the box (start, stop per axis) is the whole patch.
    assert sample["box/seg"].tolist() == [[0, n] for n in p.data.patch_size]
    assert same(
        sample,
        datasets(p.model_copy(update={"train": p.train.model_copy(update={"seed": 9})}))[1][2],
    )
    assert torch.equal(sample["target/seg"], (sample["truth/seg"] > 0).float())


def test_time_points_become_separate_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (3, 16, 16)).astype(np.uint8)
    image = labels.astype(np.float32) + np.arange(3, dtype=np.float32)[:, None, None] * 10
    write(tmp_path, "movie", image, labels, axes="TYX")
    train, _ = datasets(preset(tmp_path, normalize={"name": "fixed_range", "min": 0, "max": 1}))
    assert [e.name for e in train.entries] == ["movie[T=0]", "movie[T=1]", "movie[T=2]"]
    for t in range(3):
        sample = train.sample(t * 4)
        entry = train._entry_for(t * 4)
        assert np.array_equal(sample["image"][0] - 10 * entry, sample["target/seg"][0])


def test_resampling_to_the_target_voxel_size(tmp_path: Path) -> None:
    labels = np.zeros((32, 64), np.uint8)
    labels[8:24, 16:48] = 3
    write(tmp_path, "a", labels.astype(np.float32), labels, voxel_size=[0.5, 0.25])
    train, _ = datasets(
        preset(tmp_path, {"seg": {**SEG, "out_channels": 4}}, target_voxel_size=[1.0, 1.0])
    )
    assert train.entries[0].shape == (16, 16)
    volume = train.volume(0)
    resampled = volume.targets["seg"].read([slice(None)] * 2)[0]
    assert set(np.unique(resampled)) == {0.0, 3.0}  # labels stay labels
    assert resampled[4:12, 4:12].all() and not resampled[:4].any()
    with pytest.raises(UserError, match="voxel size is unknown"):
        write(tmp_path / "nometa", "b", labels.astype(np.float32), labels)
        datasets(preset(tmp_path / "nometa", target_voxel_size=[1.0, 1.0]))


def test_lazy_memory_and_disk_caches_give_the_same_samples(
    dataset_dir: Path, tmp_path: Path
) -> None:
    memory, _ = datasets(preset(dataset_dir, augment=[{"name": "flip"}]))
    none, _ = datasets(preset(dataset_dir, augment=[{"name": "flip"}], cache="none"))
    disk, _ = datasets(
        preset(dataset_dir, augment=[{"name": "flip"}], cache="disk", cache_dir=str(tmp_path / "c"))
    )
    for index in (0, 5, 11):
        reference = memory[index]
        for other in (none[index], disk[index]):
            assert reference.keys() == other.keys()
            assert all(torch.allclose(reference[k], other[k], atol=1e-5) for k in reference)


def test_3d_volumes_with_a_projection_head(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    volume = rng.random((8, 24, 24)).astype(np.float32)
    labels = (volume > 0.5).astype(np.uint8)
    write(tmp_path, "v", volume, labels, axes="ZYX")
    write_tiff(tmp_path / "MIP" / "v.tif", volume.max(axis=0), axes="YX", compression="none")
    heads = {
        "seg": SEG,
        "mip": {
            "name": "projection",
            "task": "regression",
            "target": "MIP",
            "loss": {"name": "mse"},
        },
    }
    augment = [{"name": "flip"}, {"name": "rot90"}]
    normalize = {"name": "fixed_range", "min": 0.0, "max": 1.0}
    train, _ = datasets(
        preset(tmp_path, heads, patch=[8, 16, 16], augment=augment, normalize=normalize)
    )
    for index in range(6):
        sample = train[index]
        shapes = {k: tuple(v.shape) for k, v in sample.items()}
        assert shapes == {
            "image": (1, 8, 16, 16),
            "target/seg": (1, 8, 16, 16),
            "weight/seg": (1, 8, 16, 16),
            "target/mip": (1, 16, 16),
            "weight/mip": (1, 16, 16),
        }
        assert torch.equal(sample["target/seg"], (sample["image"] > 0.5).float())
        projected = sample["image"].amax(dim=1).flatten().numpy()
        assert np.corrcoef(projected, sample["target/mip"].flatten().numpy())[0, 1] > 0.9999


def test_loader_streams_indices_resumably_and_disjointly_per_rank(dataset_dir: Path) -> None:
    train, _ = datasets(preset(dataset_dir))
    batches = list(itertools.islice(make_loader(train, batch_size=2, seed=1), 4))
    resumed = list(itertools.islice(make_loader(train, batch_size=2, start_index=4, seed=1), 2))
    assert all(same(a, b) for a, b in zip(batches[2:], resumed, strict=True))
    assert batches[0]["image"].shape == (2, 1, 16, 16)
    ranks = [
        set(sample_indices(start=6, batch_size=2, rank=r, world_size=3, batches=4))
        for r in range(3)
    ]
    assert not (ranks[0] & ranks[1]) and set().union(*ranks) == set(range(6, 6 + 24))


def test_loader_workers_give_the_same_batches(dataset_dir: Path) -> None:
    train, _ = datasets(preset(dataset_dir, augment=[{"name": "flip"}, {"name": "gaussian_noise"}]))
    serial = list(itertools.islice(make_loader(train, batch_size=2, seed=1), 3))
    loader = make_loader(train, batch_size=2, num_workers=2, seed=1)
    parallel = list(itertools.islice(loader, 3))
    del loader
    assert all(same(a, b) for a, b in zip(serial, parallel, strict=True))
