"""Built-in postprocessors: factories of functions applied to one image's head output.

Each function maps an array (C, *spatial) to (C', *spatial); a preset chains them, e.g.
sigmoid -> threshold -> connected_components -> remove_small_objects. Masks are arrays of 0 and
1; other integer arrays are label images (0 = background).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from bioim2im.plugin.hookspecs import Values, hookimpl
from bioim2im.plugin.registry import Registrar

if TYPE_CHECKING:
    import numpy as np

    Postprocessor = Callable[[np.ndarray], np.ndarray]

# 1 = neighbours sharing a face (4 in 2D, 6 in 3D), up to the number of spatial dims = all.
Connectivity = Annotated[int, Field(ge=1, le=3)]


def sigmoid() -> Postprocessor:
    """Logits to probabilities, channel by channel."""
    from bioim2im.builtins import _postprocess

    return _postprocess.sigmoid


def softmax() -> Postprocessor:
    """Logits to class probabilities summing to 1 over the channels."""
    from bioim2im.builtins import _postprocess

    return _postprocess.softmax


def argmax() -> Postprocessor:
    """Class index of the largest channel: (1, *spatial), uint8 (uint16 past 256 classes)."""
    from bioim2im.builtins import _postprocess

    return _postprocess.argmax


def threshold(*, value: float = 0.5) -> Postprocessor:
    """Mask of values above `value`, channel by channel (uint8 0/1).

    Args:
        value: Values above it are 1, the others 0 (a probability after sigmoid).
    """
    from bioim2im.builtins import _postprocess

    return functools.partial(_postprocess.threshold, value=value)


def connected_components(*, connectivity: Connectivity = 1) -> Postprocessor:
    """Label the connected components of each mask channel (uint32, 0 = background).

    Args:
        connectivity: Which voxels touch: 1 = sharing a face (4 neighbours in 2D, 6 in 3D), up
            to the number of spatial axes = sharing a corner too (8 in 2D, 26 in 3D).
    """
    from bioim2im.builtins import _postprocess

    return functools.partial(_postprocess.connected_components, connectivity=connectivity)


def remove_small_objects(
    *, min_size: NonNegativeInt = 64, connectivity: Connectivity = 1
) -> Postprocessor:
    """Remove objects under min_size pixels: mask components or labels of a label image.

    Args:
        min_size: Objects with fewer voxels are removed.
        connectivity: Which voxels touch when a mask is split into objects (1 = sharing a
            face; the number of spatial axes = sharing a corner).
    """
    return size_filter(min_size=min_size, connectivity=connectivity)


def size_filter(
    *,
    min_size: NonNegativeInt = 0,
    max_size: PositiveInt | None = None,
    connectivity: Connectivity = 1,
) -> Postprocessor:
    """Keep objects of min_size to max_size pixels: mask components or labels of a label image.

    Args:
        min_size: Objects with fewer voxels are removed.
        max_size: Objects with more voxels are removed; none when unset.
        connectivity: Which voxels touch when a mask is split into objects (1 = sharing a
            face; the number of spatial axes = sharing a corner).
    """
    from bioim2im.builtins import _postprocess

    return functools.partial(
        _postprocess.filter_sizes,
        min_size=min_size,
        max_size=max_size,
        connectivity=connectivity,
    )


def fill_holes() -> Postprocessor:
    """Fill the background enclosed by each object of a mask or label image."""
    from bioim2im.builtins import _postprocess

    return _postprocess.fill_holes


def watershed(
    *,
    mode: Literal["distance", "probability", "boundary"] = "distance",
    fg_channel: NonNegativeInt = 0,
    threshold: float = 0.5,
    min_distance: PositiveInt = 5,
    h: PositiveFloat | None = None,
    seed_channel: NonNegativeInt = 1,
    seed_threshold: float = 0.5,
    smooth: NonNegativeFloat = 0.0,
) -> Postprocessor:
    """Split touching objects: seeded watershed of probabilities into labels (1, *spatial).

    The foreground is ``fg_channel > threshold``. ``distance`` seeds at the peaks of the distance
    to the background, at least ``min_distance`` apart (or at its h-maxima when ``h`` is set);
    ``probability`` seeds at the components of ``seed_channel > seed_threshold``, e.g. an
    object-interior (foreground minus boundary) map; ``boundary`` reads ``seed_channel`` as an
    object-boundary map and seeds at the interior ``foreground * (1 - boundary) > seed_threshold``.
    ``smooth`` blurs the map seeds are taken from (Gaussian std in voxels) first, so that the
    texture of one object does not give it several seeds.

    Args:
        mode: How seeds are found: "distance" (peaks of the distance transform),
            "probability" (components of a seed map) or "boundary" (interior of foreground
            minus a boundary map).
        fg_channel: The channel holding the foreground probability.
        threshold: Foreground probability above which a voxel belongs to an object.
        min_distance: Least distance in voxels between two seeds (mode "distance").
        h: Seeds at the h-maxima of the distance transform instead of its peaks (mode
            "distance"); peaks lower than h above their surroundings are merged.
        seed_channel: The channel of the seed map (mode "probability") or of the boundary
            probability (mode "boundary").
        seed_threshold: Seed-map (or interior) value above which a voxel is part of a seed.
        smooth: Standard deviation in voxels of a Gaussian blur of the map seeds are taken
            from (0: none), so that one object's texture does not give it several seeds.
    """
    from bioim2im.builtins import _postprocess

    return functools.partial(
        _postprocess.watershed,
        mode=mode,
        fg_channel=fg_channel,
        threshold=threshold,
        min_distance=min_distance,
        h=h,
        seed_channel=seed_channel,
        seed_threshold=seed_threshold,
        smooth=smooth,
    )


def _watershed_grid(params: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    """What tuning tries for a watershed's parameters (which depend on its mode)."""
    grid: dict[str, tuple[float, ...]] = {"threshold": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)}
    if params.get("mode", "distance") != "distance":
        grid["seed_threshold"] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    elif params.get("h") is None:
        # With h set, seeds are h-maxima and min_distance is unused.
        grid["min_distance"] = (2, 3, 4, 6, 8)
    return grid


BIOIMAGEIO: dict[str, Callable[[dict[str, Any], list[str]], list[dict[str, Any]]]] = {
    "sigmoid": lambda params, axes: [{"id": "sigmoid"}],
    "softmax": lambda params, axes: [{"id": "softmax", "kwargs": {"axis": "channel"}}],
    "threshold": lambda params, axes: [
        {"id": "binarize", "kwargs": {"threshold": float(params["value"])}},
        {"id": "ensure_dtype", "kwargs": {"dtype": "uint8"}},
    ],
}
"""The steps bioimage.io operations express (argmax has none: the spec has no arg-reduction)."""


# What each step takes and gives (the `values` extra): `check` follows a head's chain with it.


def _probabilities(received: Values, **_: Any) -> Values:
    return Values(received.channels, "probabilities")


def _classes(received: Values, **_: Any) -> Values:
    return Values(1, "labels")


def _mask(received: Values, **_: Any) -> Values:
    return Values(received.channels, "mask")


def _objects(step: str, gives: Literal["same", "labels"]) -> Callable[..., Values]:
    """A step on masks or label images: probabilities or logits are refused."""

    def values(received: Values, **_: Any) -> Values:
        if received.kind not in ("mask", "labels"):
            raise ValueError(
                f"{step} takes a 0/1 mask or integer labels; put a threshold before it, "
                'e.g. {name = "threshold", value = 0.5}'
            )
        return received if gives == "same" else Values(received.channels, "labels")

    return values


def _watershed_values(
    received: Values, *, mode: str, fg_channel: int, seed_channel: int, **_: Any
) -> Values:
    used = [("fg_channel", fg_channel)]
    if mode != "distance":
        used.append(("seed_channel", seed_channel))
    for option, channel in used:
        if channel >= received.channels:
            valid = "0" if received.channels == 1 else f"0 to {received.channels - 1}"
            raise ValueError(f"{option} = {channel} is not one of its channels (valid: {valid})")
    return Values(1, "labels")


@hookimpl
def bioim2im_register_postprocessors(registry: Registrar) -> None:
    # Each voxel on its own: run on every block as it is predicted.
    for factory, values in (
        (sigmoid, _probabilities),
        (softmax, _probabilities),
        (argmax, _classes),
        (threshold, _mask),
    ):
        ops = BIOIMAGEIO.get(factory.__name__)
        extras: dict[str, Any] = {"bioimageio": ops} if ops is not None else {}
        registry.add(factory.__name__, factory, pointwise=True, values=values, **extras)
    # Objects numbered: ids made unique across blocks, cut objects merged.
    registry.add(
        "connected_components",
        connected_components,
        labels=True,
        values=_objects("connected_components", "labels"),
    )
    # Its thresholds are tuned on the validation images at the end of training.
    registry.add(
        "watershed", watershed, labels=True, tuned=_watershed_grid, values=_watershed_values
    )
    # Neighbourhoods of labels or masks: run on blocks with a halo.
    for factory in (remove_small_objects, size_filter, fill_holes):
        registry.add(factory.__name__, factory, values=_objects(factory.__name__, "same"))
