"""Noise2Void: self-supervised denoising from noisy images alone, as a training augmentation.

A head whose target is the input image itself (``target = "IM"``) would learn the identity.
The ``n2v_mask`` augmentation hides a few pixels of the input (each replaced by a random
neighbour) and trains that head on those pixels only (its weight is 0 elsewhere), so the
network must predict each pixel from its surroundings: the blind spot. It must come last in
``data.augment``, after the spatial augmentations, so that the hidden pixels are the ones the
network sees hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from bioim2im.errors import UserError
from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar

if TYPE_CHECKING:
    from bioim2im.data.transforms import Augmentation


def n2v_mask(
    *,
    fraction: Annotated[float, Field(gt=0.0, le=0.5)] = 0.002,
    window: Annotated[int, Field(ge=3)] = 5,
    replacement: Literal["neighbour", "median"] = "neighbour",
    struct_axis: int | None = None,
    struct_span: Annotated[int, Field(ge=1)] = 1,
    heads: list[str] | None = None,
    keys: Sequence[str] = ("image",),
    spatial_dims: int = 2,
) -> Augmentation:
    """Noise2Void blind spots: replace a fraction of input pixels by a random neighbour in a window and train the heads on those pixels only (last in data.augment).

    Args:
        fraction: Share of each patch's pixels hidden (and trained on).
        window: Side of the odd-sized window a hidden pixel's replacement is drawn from.
        replacement: What a hidden pixel shows: "neighbour", a random other pixel of its
            window (N2V), or "median", the median of its window without it (N2V2).
        struct_axis: structN2V, for noise correlated along one spatial axis (stripes along
            X: -1, the last axis; 0 is the first of (Z)YX): the struct_span pixels along it
            through each hidden pixel show random values too. None: pixel-wise noise only.
        struct_span: Length (odd) of that line of pixels, the hidden pixel at its centre;
            about the length over which the noise is correlated.
        heads: The heads trained on the hidden pixels only; default every head.
    """
    from bioim2im.builtins._n2v import BlindSpotMask

    present = [k.removeprefix("weight/") for k in keys if k.startswith("weight/")]
    chosen = present if heads is None else heads
    unknown = sorted(set(chosen) - set(present))
    if unknown:
        raise UserError(
            f"transform 'n2v_mask': heads {unknown} are not heads of the model {present}"
        )
    return BlindSpotMask(
        fraction,
        window,
        [f"weight/{h}" for h in chosen],
        replacement=replacement,
        struct_axis=struct_axis,
        struct_span=struct_span,
    )


def _check_n2v_mask(
    *,
    window: int,
    struct_axis: int | None = None,
    struct_span: int = 1,
    spatial_dims: int | None = None,
    **_: Any,
) -> None:
    if window % 2 == 0:
        raise ValueError(f"window must be odd, got {window}")
    if struct_span % 2 == 0:
        raise ValueError(
            f"struct_span must be odd (the hidden pixel at its centre), got {struct_span}"
        )
    if spatial_dims is not None and not -spatial_dims <= (struct_axis or 0) < spatial_dims:
        raise ValueError(
            f"struct_axis {struct_axis} is not a spatial axis of {spatial_dims}D patches "
            f"(0..{spatial_dims - 1}, or -1 for the last)"
        )


@hookimpl
def bioim2im_register_transforms(registry: Registrar) -> None:
    # Interpolating augmentations after it would blend the hidden pixels back into view.
    registry.add("n2v_mask", n2v_mask, role="augment", runs_last=True, check=_check_n2v_mask)
