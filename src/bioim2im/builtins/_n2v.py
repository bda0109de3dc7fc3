"""The Noise2Void blind-spot mask behind ``bioim2im.builtins.n2v``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bioim2im.data.transforms import Sample


@dataclass
class BlindSpotMask:
    """Replace ``fraction`` of the image's pixels and keep only those pixels in the loss of the
    heads in ``weight_keys``.

    The network then predicts each masked pixel from its surroundings alone: it cannot copy the
    pixel (it does not see it), so it learns what the neighbourhood says about the clean signal,
    and noise independent from pixel to pixel averages out (Krull et al., 2019).

    ``replacement`` says what a hidden pixel shows: ``"neighbour"``, a random other pixel of the
    ``window``-wide box around it (N2V), or ``"median"``, the median of that box without the
    pixel itself (N2V2: no copy of any one neighbour's noise). ``struct_axis`` (a spatial axis)
    and ``struct_span`` make structN2V's mask (Broaddus et al., 2020): the ``struct_span`` pixels
    along that axis centred on each hidden pixel also show random values (uniform over the
    patch's range), so noise correlated along the axis (camera stripes) cannot be read from the
    neighbours either.
    """

    fraction: float
    window: int
    weight_keys: Sequence[str]
    replacement: str = "neighbour"
    struct_axis: int | None = None
    struct_span: int = 1

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = sample["image"]
        shape = image.shape[1:]
        count = max(1, round(self.fraction * math.prod(shape)))
        pixels = np.unravel_index(rng.choice(math.prod(shape), count, replace=False), shape)
        hidden: tuple[Any, ...] = (slice(None), *pixels)
        out = dict(sample)
        out["image"] = image.copy()
        if self.struct_axis is not None and self.struct_span > 1:
            self._struct(out["image"], np.stack(pixels), rng)
        if self.replacement == "median":
            out["image"][hidden] = self._medians(image, np.stack(pixels))
        else:
            shown: tuple[Any, ...] = (slice(None), *self._neighbours(np.stack(pixels), shape, rng))
            out["image"][hidden] = image[shown]
        for key in self.weight_keys:
            out[key] = np.zeros_like(sample[key])
            out[key][hidden] = sample[key][hidden]
        return out

    def _offsets(self, ndim: int) -> np.ndarray:
        """(ndim, window**ndim - 1): every position of the box but its centre."""
        half = self.window // 2
        box = np.stack(np.unravel_index(np.arange(self.window**ndim), (self.window,) * ndim))
        box = box - half
        return box[:, np.any(box != 0, axis=0)]

    @staticmethod
    def _mirrored(positions: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, ...]:
        """``positions`` (ndim, ...) mirrored back into the image at its edges."""
        top = np.array(shape).reshape(-1, *[1] * (positions.ndim - 1)) - 1
        moved = np.abs(positions)
        moved = np.where(moved > top, 2 * top - moved, moved)
        return tuple(np.clip(moved, 0, top))

    def _neighbours(
        self, pixels: np.ndarray, shape: Sequence[int], rng: np.random.Generator
    ) -> tuple[np.ndarray, ...]:
        """A random other pixel of each pixel's box, mirrored back into the image at its edges."""
        offsets = self._offsets(len(shape))
        chosen = offsets[:, rng.integers(offsets.shape[1], size=pixels.shape[1])]
        return self._mirrored(pixels + chosen, shape)

    def _medians(self, image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """(C, n): the median of each pixel's box without the pixel itself, per channel."""
        offsets = self._offsets(len(image.shape) - 1)
        around: tuple[Any, ...] = (
            slice(None),
            *self._mirrored(pixels[:, :, None] + offsets[:, None, :], image.shape[1:]),
        )
        return np.median(image[around], axis=-1)

    def _struct(self, image: np.ndarray, pixels: np.ndarray, rng: np.random.Generator) -> None:
        """structN2V: random values on the line of ``struct_span`` pixels along ``struct_axis``
        through each hidden pixel (the pixel itself is replaced afterwards)."""
        assert self.struct_axis is not None
        ndim = pixels.shape[0]
        half = self.struct_span // 2
        steps = np.array([s for s in range(-half, half + 1) if s != 0])
        line = np.zeros((ndim, steps.size), dtype=np.int64)
        line[self.struct_axis % ndim] = steps
        where = self._mirrored(pixels[:, :, None] + line[:, None, :], image.shape[1:])
        low, high = float(image.min()), float(image.max())
        values = rng.uniform(low, high, size=(image.shape[0], *where[0].shape))
        index: tuple[Any, ...] = (slice(None), *where)
        image[index] = values.astype(image.dtype)
