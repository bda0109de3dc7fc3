"""Built-in instance segmentation components for crowded, touching objects.

Two ways of telling touching nuclei apart, each a head, a loss (which asks for its own target,
see :mod:`bioim2im.data.encodings`) and a decoding postprocessor:

- **distance maps** (as torch-em): loss ``instance_distance`` on a ``conv`` head of 2 channels,
  the foreground and each object voxel's distance to its own border divided by the largest in
  the object; decoded by ``watershed`` in ``probability`` mode with ``seed_channel = 1``, which
  grows one object from each high-distance core (after a ``sigmoid``);
- **EmbedSeg** (Lalit et al., 2021): head ``embedseg``, loss ``embedseg``, postprocessor
  ``embedseg_cluster``; see :mod:`bioim2im.builtins._embedseg`.

Decoders that number objects are registered with ``labels=True`` (block-wise prediction
stitches their ids); ``tuned`` gives the values the end of training tries for their thresholds
on the validation images (see :mod:`bioim2im.training.tuning`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from bioim2im.data import encodings
from bioim2im.errors import UserError
from bioim2im.plugin.hookspecs import Values, hookimpl
from bioim2im.plugin.registry import Registrar

if TYPE_CHECKING:
    import numpy as np

    Postprocessor = Callable[[np.ndarray], np.ndarray]

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def embedseg_head(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    hidden_channels: PositiveInt = 16,
    radius: PositiveFloat | list[PositiveFloat] = 8.0,
) -> Any:
    """EmbedSeg's outputs from two branches: offsets + bandwidths per axis, and a seed map.

    Args:
        hidden_channels: Channels of each branch's 3x3(x3) convolution, before its 1x1(x1)
            output convolution.
        radius: Voxels from an object's centre at which the untrained Gaussian falls to 0.5,
            one number or one per axis ((Z,) Y, X): about the objects' half extent, so that
            training starts from Gaussians the objects' size (bioim2im plan sets it).
    """
    from bioim2im.builtins._embedseg import EmbedSegHead

    expected = encodings.embedding_channels(spatial_dims)
    if out_channels != expected:
        raise UserError(
            f"head 'embedseg' has {expected} output channels in {spatial_dims}D "
            f"(an offset and a bandwidth per axis, and a seed map); set out_channels = {expected}"
        )
    if isinstance(radius, list) and len(radius) != spatial_dims:
        raise UserError(
            f"head 'embedseg': radius {radius} needs one number per spatial axis "
            f"({spatial_dims}), or one number for all"
        )
    return EmbedSegHead(spatial_dims, in_channels, hidden_channels, radius)


def instance_distance(
    *, distance_weight: NonNegativeFloat = 1.0, lambda_dice: NonNegativeFloat = 1.0
) -> Any:
    """Foreground (Dice + cross-entropy) + per-object normalised distance to the border (BCE).

    Args:
        distance_weight: Weight of the distance term against the foreground term.
        lambda_dice: Weight of the Dice part of the foreground term (its cross-entropy
            weighs 1).
    """
    from bioim2im.builtins._distance import ForegroundDistanceLoss
    from bioim2im.builtins.losses import dice_ce

    return ForegroundDistanceLoss(
        dice_ce(sigmoid=True, lambda_dice=lambda_dice), distance_weight=distance_weight
    )


def embedseg_loss(
    *,
    spatial_dims: int,
    instance_weight: NonNegativeFloat = 1.0,
    variance_weight: NonNegativeFloat = 10.0,
    seed_weight: NonNegativeFloat = 1.0,
    foreground_weight: NonNegativeFloat = 1.0,
) -> Any:
    """EmbedSeg: Lovasz hinge of each object's Gaussian, bandwidth variance, seed regression.

    Args:
        instance_weight: Weight of the Lovasz hinge of each object's Gaussian (its IoU with
            the object).
        variance_weight: Weight of the variance of each object's bandwidths.
        seed_weight: Weight of the seed map's squared error.
        foreground_weight: Weight of the object voxels in the seed term, against the
            background's 1.
    """
    from bioim2im.builtins._embedseg import EmbedSegLoss

    return EmbedSegLoss(
        spatial_dims,
        instance_weight=instance_weight,
        variance_weight=variance_weight,
        seed_weight=seed_weight,
        foreground_weight=foreground_weight,
    )


def embedseg_cluster(
    *,
    fg_threshold: Probability = 0.5,
    seed_threshold: Probability = 0.8,
    min_size: NonNegativeInt = 10,
) -> Postprocessor:
    """EmbedSeg outputs to labels (1, *spatial): objects grown from the best seeds in turn.

    Args:
        fg_threshold: Seed-map probability above which a voxel is foreground (clustered).
        seed_threshold: Seed-map probability a voxel needs to start an object.
        min_size: Objects with fewer voxels are dropped.
    """
    from bioim2im.builtins import _embedseg

    return functools.partial(
        _embedseg.cluster,
        fg_threshold=fg_threshold,
        seed_threshold=seed_threshold,
        min_size=min_size,
    )


def _cluster_grid(params: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    return {
        "fg_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
        "seed_threshold": (0.5, 0.6, 0.7, 0.8, 0.9),
    }


@hookimpl
def bioim2im_register_heads(registry: Registrar) -> None:
    registry.add(
        "embedseg",
        embedseg_head,
        out_channels=encodings.embedding_channels,
        directions=encodings.embedding_directions,
    )


@hookimpl
def bioim2im_register_losses(registry: Registrar) -> None:
    registry.add(
        "instance_distance",
        instance_distance,
        encode_target=encodings.foreground_and_distance,
        out_channels=encodings.distance_channels,
    )
    registry.add(
        "embedseg",
        embedseg_loss,
        encode_target=encodings.instance_labels,
        out_channels=encodings.embedding_channels,
        directions=encodings.embedding_directions,
    )


def _cluster_values(received: Values, *, spatial_dims: int, **_: Any) -> Values:
    expected = encodings.embedding_channels(spatial_dims)
    if received.kind != "float" or received.channels != expected:
        raise ValueError(
            f"embedseg_cluster decodes the raw output of an EmbedSeg head: {expected} channels "
            f"of real values in {spatial_dims}D (an offset and a bandwidth per axis, and a seed "
            "map), with no step before it"
        )
    return Values(1, "labels")


@hookimpl
def bioim2im_register_postprocessors(registry: Registrar) -> None:
    registry.add(
        "embedseg_cluster",
        embedseg_cluster,
        labels=True,
        tuned=_cluster_grid,
        values=_cluster_values,
    )
