"""EmbedSeg (Lalit et al., 2021, after Neven et al., 2019): instance segmentation by spatial
embeddings, in 2D and 3D.

Output channels, for ``d`` spatial axes: ``d`` offsets, ``d`` bandwidths, 1 seed logit.

- Each voxel's *embedding* is its position plus its offset, in units of :data:`LENGTH` voxels:
  training pulls the embeddings of an object's voxels onto the object's centre. Offsets are
  relative to the voxel, so windows predicted at different places blend meaningfully, and
  decoding may measure positions from any origin (a block's corner) as long as it uses the same
  one for every voxel it clusters together.
- The *bandwidths* ``b`` (per axis, learned per object: their mean over the object) make a
  Gaussian around the centre, ``score = exp(-sum_a (e_a - c_a)^2 * exp(10 b_a))``, whose
  ``score > 0.5`` region should be the object: a Lovasz hinge on ``2 score - 1`` optimises its
  IoU with the object directly, and a variance term keeps each object's bandwidths alike, so
  that any of its voxels can stand for it at decoding.
- The *seed* map regresses each object voxel's score (1 at voxels whose embedding sits on the
  centre) and 0 in the background: at decoding, the best seeds are where to start clusters.

Decoding (:func:`cluster`): among the foreground voxels (seed > ``fg_threshold``), repeatedly
take the best unclustered seed above ``seed_threshold``; the foreground voxels within its
Gaussian (score > 0.5, found with a k-d tree of the embeddings) form one object, kept when it
has at least ``min_size`` voxels and most of them are still unclustered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

LENGTH = 64.0
"""Voxels per unit of embedding: positions and offsets are divided by it (offsets of a few
units reach across any nucleus; bandwidths stay near 0)."""
SHARPNESS = 10.0
"""Bandwidth channels ``b`` scale the Gaussian by ``exp(SHARPNESS * b)`` (as EmbedSeg)."""
INITIAL_RADIUS = 8.0
"""Voxels from the centre at which the untrained Gaussian falls to 0.5."""
LN2 = math.log(2.0)
NEGLIGIBLE = 1e-3
"""Scores below this outside an object are left out of its Lovasz hinge (see EmbedSegLoss)."""
MARGIN = 8
"""Voxels around an object, at the least, over which its Gaussian is scored (EmbedSegLoss)."""


def bandwidth_bias(radius: float = INITIAL_RADIUS) -> float:
    """The bandwidth whose Gaussian falls to 0.5 ``radius`` voxels from its centre."""
    return math.log(LN2 / (radius / LENGTH) ** 2) / SHARPNESS


class EmbedSegHead(nn.Module):
    """Two branches on the backbone's features: embeddings (offsets + bandwidths), and seeds.

    Each branch is a 3x3(x3) convolution with a ReLU, then a 1x1(x1) convolution. The offsets
    start near 0 and the bandwidths near a Gaussian of ``radius`` voxels per axis (small
    weights, bias set).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        hidden_channels: int,
        radius: float | Sequence[float] = INITIAL_RADIUS,
    ) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.spatial_dims = spatial_dims

        def branch(last: nn.Module) -> nn.Sequential:
            return nn.Sequential(
                conv(in_channels, hidden_channels, 3, padding=1), nn.ReLU(inplace=True), last
            )

        embedding = conv(hidden_channels, 2 * spatial_dims, 1)
        with torch.no_grad():
            embedding.weight.mul_(0.1)
            bias = embedding.bias
            assert bias is not None
            bias[:spatial_dims].zero_()
            radii = [radius] * spatial_dims if isinstance(radius, (int, float)) else radius
            bias[spatial_dims:] = torch.tensor([bandwidth_bias(r) for r in radii])
        self.embedding = branch(embedding)
        self.seed = branch(conv(hidden_channels, 1, 1))

    def forward(self, features: Tensor) -> Tensor:
        return torch.cat([self.embedding(features), self.seed(features)], dim=1)


def positions(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """(d, *shape): each voxel's index along each axis, in embedding units."""
    axes = [torch.arange(n, device=device, dtype=dtype) / LENGTH for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def lovasz_hinge(logits: Tensor, truth: Tensor) -> Tensor:
    """The Lovasz hinge (Berman et al., 2018) of one binary mask: a convex surrogate of 1 - IoU.

    ``logits`` (N,) are scores in (-inf, inf) with 0 as the decision boundary; ``truth`` (N,)
    is 0/1. Margin errors sorted from worst to best are weighted by how much each one adds to
    the Jaccard loss of the masks they define.
    """
    signs = 2.0 * truth - 1.0
    errors = 1.0 - logits * signs
    errors, order = torch.sort(errors, descending=True)
    truth = truth[order]
    total = truth.sum()
    intersection = total - truth.cumsum(0)
    union = total + (1.0 - truth).cumsum(0)
    jaccard = 1.0 - intersection / union
    # Each position's weight is the Jaccard loss it adds.
    weights = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return torch.dot(torch.relu(errors), weights)


class EmbedSegLoss(nn.Module):
    """EmbedSeg's loss on (B, 2d + 1, *spatial) outputs and (B, 1, *spatial) instance labels.

    Per patch: ``instance_weight`` x the mean over objects of the Lovasz hinge of their
    Gaussian, ``variance_weight`` x the mean over objects of the variance of their bandwidths,
    and ``seed_weight`` x the mean over voxels of the seed map's squared error (object voxels
    weighted by ``foreground_weight``). Voxels of weight 0 take no part. Object centres are the
    mean position of their voxels in the patch.

    An object's Gaussian is scored around it only: over its bounding box grown by its own size
    (at least :data:`MARGIN` voxels) on every side. Voxels farther away would have to be
    embedded across more than the object's size to land in it, which their own objects' terms
    (or, in the background, the seed map) already prevent; leaving them out makes the loss cost
    grow with the objects' volume rather than with objects times the patch.
    """

    def __init__(
        self,
        spatial_dims: int,
        *,
        instance_weight: float = 1.0,
        variance_weight: float = 10.0,
        seed_weight: float = 1.0,
        foreground_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.instance_weight = instance_weight
        self.variance_weight = variance_weight
        self.seed_weight = seed_weight
        self.foreground_weight = foreground_weight

    def forward(self, prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        d = self.spatial_dims
        if prediction.shape[1] != 2 * d + 1:
            raise ValueError(
                f"EmbedSeg needs {2 * d + 1} output channels in {d}D, got {prediction.shape[1]}"
            )
        grid = positions(tuple(prediction.shape[2:]), prediction.device, prediction.dtype)
        total = prediction.new_zeros(())
        for b in range(prediction.shape[0]):
            valid = (
                torch.ones_like(target[b, 0], dtype=torch.bool)
                if weight is None
                else weight[b, 0] > 0
            )
            labels = torch.where(valid, target[b, 0].round().long(), 0)
            total = total + self._one(prediction[b], labels, valid, grid)
        return total / prediction.shape[0]

    def _one(self, output: Tensor, labels: Tensor, valid: Tensor, grid: Tensor) -> Tensor:
        """The loss of one patch: ``output`` (2d + 1, *S), ``labels`` and ``valid`` (*S)."""
        from scipy import ndimage

        d = self.spatial_dims
        seed = torch.sigmoid(output[2 * d])
        seed_loss = (seed[(labels == 0) & valid] ** 2).sum()
        instance_loss = output.new_zeros(())
        variance_loss = output.new_zeros(())
        # Objects numbered 1..n in the patch, and their bounding boxes.
        ids, sequential = np.unique(labels.cpu().numpy(), return_inverse=True)
        sequential = sequential.reshape(labels.shape) + (0 if ids[0] == 0 else 1)
        boxes = ndimage.find_objects(sequential)
        for box, label in zip(boxes, ids[ids != 0], strict=True):
            around = (slice(None), *self._around(box, labels.shape))
            inside = labels[around[1:]] == int(label)
            own = output[d : 2 * d][around][:, inside]
            mean = own.mean(dim=1)
            variance_loss = variance_loss + ((own - mean.detach()[:, None]) ** 2).mean()
            local = grid[around]
            centre = local[:, inside].mean(dim=1)
            shape = (d,) + (1,) * d
            scale = torch.exp(SHARPNESS * mean).reshape(shape)
            offsets = local + output[:d][around] - centre.reshape(shape)
            score = torch.exp(-((offsets**2) * scale).sum(dim=0))
            # Background voxels far outside the Gaussian add at most 2 * NEGLIGIBLE to the
            # hinge: leaving them out spares sorting them.
            near = (inside | (score > NEGLIGIBLE)) & valid[around[1:]]
            instance_loss = instance_loss + lovasz_hinge(
                2 * score[near] - 1, inside[near].to(score.dtype)
            )
            seed_loss = (
                seed_loss
                + self.foreground_weight
                * ((seed[around[1:]][inside] - score[inside].detach()) ** 2).sum()
            )
        objects = max(len(boxes), 1)
        return (
            self.instance_weight * instance_loss / objects
            + self.variance_weight * variance_loss / objects
            + self.seed_weight * seed_loss / max(int(valid.sum()), 1)
        )

    @staticmethod
    def _around(box: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
        """``box`` grown by its own size (at least MARGIN) on every side, within ``shape``."""
        grown = []
        for s, n in zip(box, shape, strict=True):
            margin = max(s.stop - s.start, MARGIN)
            grown.append(slice(max(0, s.start - margin), min(n, s.stop + margin)))
        return tuple(grown)


def cluster(
    array: np.ndarray,
    *,
    fg_threshold: float,
    seed_threshold: float,
    min_size: int,
) -> np.ndarray:
    """Instance labels (1, *spatial) uint32 from EmbedSeg outputs (2d + 1, *spatial).

    Positions are measured from the array's first voxel: any cut-out of a larger prediction
    gives the same objects, since only differences of embeddings count.
    """
    from scipy.spatial import cKDTree
    from scipy.special import expit

    d = array.ndim - 1
    if array.shape[0] != 2 * d + 1:
        raise ValueError(
            f"EmbedSeg clustering needs {2 * d + 1} channels in {d}D, got {array.shape[0]}"
        )
    seed = expit(array[2 * d].astype(np.float32))
    foreground = seed > fg_threshold
    labels = np.zeros(array.shape[1:], dtype=np.uint32)
    where = np.nonzero(foreground)
    if len(where[0]) == 0:
        return labels[np.newaxis]
    embedding = np.stack([w / LENGTH + array[a][where] for a, w in enumerate(where)], axis=1)
    scale = np.exp(SHARPNESS * np.stack([array[d + a][where] for a in range(d)], axis=1))
    seeds = seed[where]
    tree = cKDTree(embedding)
    clustered = np.zeros(len(seeds), dtype=bool)
    ids = np.zeros(len(seeds), dtype=np.uint32)
    count = 0
    for voxel in np.argsort(-seeds, kind="stable"):
        if seeds[voxel] < seed_threshold:
            break
        if clustered[voxel]:
            continue
        centre, own = embedding[voxel], scale[voxel]
        # A ball that holds the Gaussian's score > 0.5 ellipsoid, then the ellipsoid itself.
        near = np.asarray(tree.query_ball_point(centre, math.sqrt(LN2 / own.min())), dtype=np.intp)
        inside = near[(((embedding[near] - centre) ** 2) * own).sum(axis=1) < LN2]
        free = inside[~clustered[inside]]
        clustered[voxel] = True
        if len(inside) >= min_size and 2 * len(free) > len(inside):
            count += 1
            ids[free] = count
        clustered[inside] = True
    labels[where] = ids
    return labels[np.newaxis]
