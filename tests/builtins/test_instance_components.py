"""Distance maps and EmbedSeg on small hand-made label images with known answers: targets,
losses, decoders, and decoding block by block with stitched ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.draw import disk, ellipsoid

from bioim2im.builtins import _embedseg
from bioim2im.data.encodings import foreground_and_distance
from bioim2im.errors import UserError
from bioim2im.metrics.instance import detection_scores, instance_overlaps
from bioim2im.plugin.manager import get_registry
from bioim2im.prediction.blockwise import label_blockwise


def ap(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> float:
    return detection_scores(instance_overlaps(pred, truth), iou)[f"ap@{iou:.2f}"]


def build(kind: str, name: str, dims: int = 2, structural: dict | None = None, **params):
    component = get_registry().get(kind, name)
    return component.build(params, spatial_dims=dims, **(structural or {}))


def touching_disks() -> np.ndarray:
    """A large and a smaller disk touching along a shared border, and a small one apart."""
    truth = np.zeros((40, 64), np.int64)
    truth[disk((20, 20), 12)] = 1
    truth[disk((20, 39), 8)] = 2  # cuts into disk 1: they share a border
    truth[disk((6, 58), 4)] = 3
    return truth


def crowded(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Many disks of radius 3 to 8, neighbours touching."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int64)
    label = 0
    for _ in range(300):
        centre = rng.uniform(0, shape)
        radius = rng.uniform(3, 8)
        rr, cc = disk(tuple(centre), radius, shape=shape)
        # Overwrite only background, and only when most of the disk is free: touching, not
        # swallowed; of what is free, only its largest piece.
        free = truth[rr, cc] == 0
        if free.mean() > 0.85 and free.sum() > 20:
            piece = np.zeros(shape, bool)
            piece[rr[free], cc[free]] = True
            pieces, _ = ndimage.label(piece)
            label += 1
            truth[pieces == 1 + np.argmax(np.bincount(pieces.ravel())[1:])] = label
    return truth


def ideal_embedseg(truth: np.ndarray, radius: float = 6.0) -> np.ndarray:
    """The outputs EmbedSeg is trained towards: offsets onto each object's centre, one
    bandwidth everywhere, seeds highest at centres."""
    d = truth.ndim
    out = np.zeros((2 * d + 1, *truth.shape), np.float32)
    grid = np.stack(np.meshgrid(*map(np.arange, truth.shape), indexing="ij")).astype(np.float32)
    out[d : 2 * d] = _embedseg.bandwidth_bias(radius)
    out[2 * d] = -8.0
    for label in np.unique(truth)[1:]:
        inside = truth == label
        centre = grid[:, inside].mean(axis=1)
        out[:d, inside] = (centre[:, None] - grid[:, inside]) / _embedseg.LENGTH
        distance = np.sqrt(((grid[:, inside] - centre[:, None]) ** 2).sum(axis=0))
        out[2 * d, inside] = 4.0 - distance / 3
    return out


# ---- distance maps ----------------------------------------------------------------------------


def test_distance_target_peaks_at_each_core_and_dips_between_touching_objects() -> None:
    truth = touching_disks()
    foreground, distance = foreground_and_distance(truth[None].astype(np.float32))
    np.testing.assert_array_equal(foreground, truth > 0)
    for label in (1, 2, 3):
        # Normalised per object: small and large objects alike reach 1 at their cores.
        assert distance[truth == label].max() == pytest.approx(1.0)
    assert distance[truth == 0].max() == 0.0
    # Across the shared border, the distance falls to 0 and rises again.
    row = distance[20, 8:48]
    border = np.flatnonzero(truth[20, 8:48] == 2)[0]
    assert row[border - 1] == 0.0 and row[border] == 0.0
    assert row[12] == pytest.approx(1.0)  # the large disk's centre (x = 20)
    # The large disk's border voxel (x = 9) is 0, the next one 1 / 11 of its deepest.
    assert row[1] == 0.0
    assert row[2] == pytest.approx(1 / 11, abs=0.01)


def test_watershed_of_the_distance_target_recovers_every_object() -> None:
    truth = touching_disks()
    target = foreground_and_distance(truth[None].astype(np.float32))
    watershed = build("postprocessor", "watershed", mode="probability", seed_channel=1)
    assert ap(watershed(target)[0], truth, 0.9) == 1.0


def test_distance_loss_is_dice_and_cross_entropy_on_the_foreground_plus_distance_bce() -> None:
    loss = build("loss", "instance_distance", distance_weight=2.0)
    target = torch.tensor([[[[1.0, 0.0]], [[0.5, 0.0]]]])  # (B=1, 2, 1, 2)
    logits = torch.zeros(1, 2, 1, 2)
    # p = 0.5 everywhere. Foreground: Dice 1 - (2 * 0.5 + eps) / (2 * 0.5 + 0.5 + 0.5 + eps),
    # BCE ln 2; distance BCE against soft targets is ln 2 whatever they are at p = 0.5.
    dice = 1 - (1.0 + 1e-5) / (2.0 + 1e-5)
    expected = dice + np.log(2) + 2.0 * np.log(2)
    assert float(loss(logits, target)) == pytest.approx(expected, rel=1e-5)
    # A pixel of weight 0 takes no part, whatever is predicted there.
    weight = torch.tensor([[[[1.0, 0.0]]]])
    changed = logits.clone()
    changed[..., 1] = 9.0
    assert float(loss(logits, target, weight)) == pytest.approx(
        float(loss(changed, target, weight))
    )
    with pytest.raises(ValueError, match="2 output channels"):
        loss(torch.zeros(1, 3, 1, 2), target)


def test_training_patches_carry_the_target_each_loss_asks_for(tmp_path) -> None:
    from bioim2im.config import validate
    from bioim2im.data.datasets import training_datasets
    from bioim2im.io.tiff import write_tiff

    truth = touching_disks()
    image = (truth > 0).astype(np.float32) + np.random.default_rng(0).normal(0, 0.1, truth.shape)
    write_tiff(tmp_path / "IM" / "a.tif", image.astype(np.float32), axes="YX")
    write_tiff(tmp_path / "GT" / "a.tif", truth.astype(np.uint16), axes="YX")

    def first_target(head: dict) -> np.ndarray:
        table = {
            "data": {"path": str(tmp_path), "patch_size": list(truth.shape), "val_fraction": 0.0},
            "model": {"backbone": {"name": "unet"}, "heads": {"seg": {"task": "instance", **head}}},
        }
        train, _ = training_datasets(validate(table, get_registry(), "test"), check=False)
        return train[0]["target/seg"].numpy()

    distance = {"name": "conv", "out_channels": 2, "loss": {"name": "instance_distance"}}
    np.testing.assert_array_equal(
        first_target(distance), foreground_and_distance(truth[None].astype(np.float32))
    )
    embedseg = {"name": "embedseg", "out_channels": 5, "loss": {"name": "embedseg"}}
    np.testing.assert_array_equal(first_target(embedseg), truth[None])


# ---- EmbedSeg ---------------------------------------------------------------------------------


def test_lovasz_hinge_values() -> None:
    truth = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # Margins of 1 on the right side: no error at all.
    assert float(_embedseg.lovasz_hinge(torch.tensor([1.0, 1.0, -1.0, -1.0]), truth)) == 0.0
    # Undecided everywhere: every error is 1, and the weights add up to the Jaccard loss of
    # getting every pixel wrong, 1.
    assert float(_embedseg.lovasz_hinge(torch.zeros(4), truth)) == pytest.approx(1.0)
    # One background pixel wrong by 1 (error 2): alone it would make IoU 2/3, loss 1/3 x 2.
    logits = torch.tensor([1.0, 1.0, 1.0, -1.0])
    assert float(_embedseg.lovasz_hinge(logits, truth)) == pytest.approx(2 / 3)


def test_embedseg_head_channels_and_initial_bandwidth() -> None:
    head = build("head", "embedseg", structural={"in_channels": 4, "out_channels": 5})
    with torch.no_grad():
        out = head(torch.randn(2, 4, 16, 16))
    assert out.shape == (2, 5, 16, 16)
    # Offsets start small, bandwidths at a Gaussian falling to 0.5 at INITIAL_RADIUS voxels.
    assert out[:, :2].abs().max() < 0.5
    bandwidth = float(out[:, 2:4].mean())
    radius = _embedseg.LENGTH * np.sqrt(np.log(2) / np.exp(_embedseg.SHARPNESS * bandwidth))
    assert radius == pytest.approx(_embedseg.INITIAL_RADIUS, rel=0.3)
    head_3d = build("head", "embedseg", dims=3, structural={"in_channels": 4, "out_channels": 7})
    assert head_3d(torch.randn(1, 4, 4, 8, 8)).detach().shape == (1, 7, 4, 8, 8)
    # The initial Gaussian fits the objects: a radius per axis (small along a coarse Z).
    head_3d = build(
        "head",
        "embedseg",
        dims=3,
        structural={"in_channels": 4, "out_channels": 7},
        radius=[2.0, 5.0, 5.0],
    )
    with torch.no_grad():
        out = head_3d(torch.randn(1, 4, 4, 8, 8))
    bandwidths = out[0, 3:6].mean(dim=(1, 2, 3)).numpy()
    radii = _embedseg.LENGTH * np.sqrt(np.log(2) / np.exp(_embedseg.SHARPNESS * bandwidths))
    assert radii == pytest.approx([2.0, 5.0, 5.0], rel=0.3)
    with pytest.raises(UserError, match="radius"):
        build(
            "head",
            "embedseg",
            dims=3,
            structural={"in_channels": 4, "out_channels": 7},
            radius=[2.0, 5.0],
        )
    with pytest.raises(UserError, match="out_channels = 5"):
        build("head", "embedseg", structural={"in_channels": 4, "out_channels": 2})


def test_embedseg_loss_is_low_for_ideal_outputs_and_ignores_unweighted_pixels() -> None:
    loss = build("loss", "embedseg")
    truth = touching_disks()
    target = torch.from_numpy(truth[None, None].astype(np.float32))
    ideal = torch.from_numpy(ideal_embedseg(truth, radius=8.0))[None]
    scattered = ideal.clone()
    scattered[:, :2] += 0.2 * torch.randn_like(scattered[:, :2])
    assert float(loss(ideal, target)) < 0.5 * float(loss(scattered, target))
    # The gradient pulls offsets and seeds.
    prediction = scattered.clone().requires_grad_()
    loss(prediction, target).backward()
    assert prediction.grad is not None
    assert prediction.grad[:, :2].abs().sum() > 0 and prediction.grad[:, 4].abs().sum() > 0
    # Voxels of weight 0 (here: the third object and the background around it) do not count.
    weight = torch.ones_like(target)
    weight[..., :14, 48:] = 0
    other = ideal.clone()
    other[..., :14, 48:] = torch.randn_like(other[..., :14, 48:])
    assert float(loss(ideal, target, weight)) == pytest.approx(float(loss(other, target, weight)))


def test_embedseg_loss_matches_a_hand_computed_case() -> None:
    """One object of 2 voxels in a 1 x 3 image, all offsets 0: the terms by hand."""
    loss = _embedseg.EmbedSegLoss(2, variance_weight=10.0)
    target = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    prediction = torch.zeros(1, 5, 1, 3)
    prediction[:, 2] = 0.3  # bandwidth y
    prediction[:, 3, 0] = torch.tensor([0.1, 0.3, 0.0])  # bandwidth x: mean 0.2 over the object
    prediction[:, 4] = torch.tensor([0.0, 2.0, -1.0])  # seed logits
    x = torch.tensor([0.0, 1.0, 2.0]) / _embedseg.LENGTH
    centre = x[:2].mean()
    score = torch.exp(-((x - centre) ** 2) * np.exp(_embedseg.SHARPNESS * 0.2))
    hinge = _embedseg.lovasz_hinge(2 * score - 1, torch.tensor([1.0, 1.0, 0.0]))
    variance = (0.0 + 0.01 + 0.01) / 4  # mean over 2 axes x 2 voxels of (b - mean)^2
    seeds = torch.sigmoid(torch.tensor([0.0, 2.0, -1.0]))
    seed = (seeds[2] ** 2 + (seeds[0] - score[0]) ** 2 + (seeds[1] - score[1]) ** 2) / 3
    expected = hinge + 10.0 * variance + seed
    assert float(loss(prediction, target)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_clustering_ideal_outputs_recovers_every_object(dims: int) -> None:
    if dims == 2:
        truth = touching_disks()
    else:
        truth = np.zeros((12, 32, 40), np.int64)
        truth[1:10, 2:21, 3:22][ellipsoid(4, 9, 9)[1:-1, 1:-1, 1:-1]] = 1
        region = truth[2:9, 6:19, 20:33]
        region[ellipsoid(3, 6, 6)[1:-1, 1:-1, 1:-1] & (region == 0)] = 2  # touches the first
        assert ap(truth, truth) == 1.0 and truth.max() == 2
    cluster = build("postprocessor", "embedseg_cluster", dims=dims, min_size=5)
    labels = cluster(ideal_embedseg(truth))
    assert labels.shape == (1, *truth.shape) and labels.dtype == np.uint32
    assert ap(labels[0], truth, 0.9) == 1.0


def test_clustering_a_cut_out_finds_the_same_objects() -> None:
    """Positions count from the cut-out's corner: only differences of embeddings matter."""
    truth = crowded((96, 96), seed=1)
    outputs = ideal_embedseg(truth)
    cluster = build("postprocessor", "embedseg_cluster", min_size=5)
    whole = cluster(outputs)[0]
    part = cluster(outputs[:, 17:80, 23:90])[0]
    inner = whole[17:80, 23:90]
    # Objects wholly inside the cut-out are found alike.
    kept = [i for i in np.unique(inner)[1:] if (whole == i).sum() == (inner == i).sum()]
    assert len(kept) > 10
    for label in kept:
        mask = inner == label
        assert len(np.unique(part[mask])) == 1 and part[mask][0] > 0
        assert (part == part[mask][0]).sum() == mask.sum()


@pytest.mark.parametrize("decoder", ["embedseg", "distance"])
def test_decoding_block_by_block_gives_unique_ids_and_the_whole_image_objects(decoder) -> None:
    truth = crowded((128, 128), seed=2)
    if decoder == "embedseg":
        values = ideal_embedseg(truth)
        step = build("postprocessor", "embedseg_cluster", min_size=5)
    else:
        values = foreground_and_distance(truth[None].astype(np.float32))
        step = build("postprocessor", "watershed", mode="probability", seed_channel=1)
    whole = step(values)[0]
    labels = np.zeros(truth.shape, np.uint32)
    blocks = [
        (slice(y, y + 32), slice(x, x + 32)) for y in range(0, 128, 32) for x in range(0, 128, 32)
    ]
    count = label_blockwise(values, labels, blocks, lambda block: step(block)[0], halo=24)
    # Ids 1..n, each object one id although many cross block borders.
    assert set(np.unique(labels)) == set(range(count + 1))
    crossing = {
        i
        for i in np.unique(truth)[1:]
        if len({(y // 32, x // 32) for y, x in zip(*np.nonzero(truth == i), strict=True)}) > 1
    }
    assert len(crossing) > 10
    # The objects of a whole-image run, which finds (nearly) every true one.
    assert count == whole.max()
    assert ap(labels, whole, 0.9) == 1.0
    assert ap(whole, truth, 0.9) > 0.95


# ---- what tuning tries ------------------------------------------------------------------------


def test_decoders_declare_the_thresholds_tuning_tries() -> None:
    registry = get_registry()

    def grid(name: str, **params) -> dict:
        return dict(registry.get("postprocessor", name).extras["tuned"](params))

    assert set(grid("embedseg_cluster")) == {"fg_threshold", "seed_threshold"}
    assert set(grid("watershed", mode="probability")) == {"threshold", "seed_threshold"}
    assert set(grid("watershed", mode="boundary")) == {"threshold", "seed_threshold"}
    assert set(grid("watershed", mode="distance")) == {"threshold", "min_distance"}
    # With h-maxima seeds, min_distance is unused: not worth trying.
    assert set(grid("watershed", mode="distance", h=2.0)) == {"threshold"}
    assert all(0 < v < 1 for v in grid("embedseg_cluster")["seed_threshold"])
    assert "tuned" not in registry.get("postprocessor", "connected_components").extras
