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
    """Replace ``fraction`` of the image's pixels by a random other pixel of the ``window``-wide
    box around each, and keep only those pixels in the loss of the heads in ``weight_keys``.

    The network then predicts each masked pixel from its surroundings alone: it cannot copy the
    pixel (it does not see it), so it learns what the neighbourhood says about the clean signal,
    and noise independent from pixel to pixel averages out (Krull et al., 2019).
    """

    fraction: float
    window: int
    weight_keys: Sequence[str]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = sample["image"]
        shape = image.shape[1:]
        count = max(1, round(self.fraction * math.prod(shape)))
        pixels = np.unravel_index(rng.choice(math.prod(shape), count, replace=False), shape)
        neighbours = self._neighbours(np.stack(pixels), shape, rng)
        hidden: tuple[Any, ...] = (slice(None), *pixels)
        shown: tuple[Any, ...] = (slice(None), *neighbours)
        out = dict(sample)
        out["image"] = image.copy()
        out["image"][hidden] = image[shown]
        for key in self.weight_keys:
            out[key] = np.zeros_like(sample[key])
            out[key][hidden] = sample[key][hidden]
        return out

    def _neighbours(
        self, pixels: np.ndarray, shape: Sequence[int], rng: np.random.Generator
    ) -> tuple[np.ndarray, ...]:
        """A random other pixel of each pixel's box, mirrored back into the image at its edges."""
        ndim, half = len(shape), self.window // 2
        # Box positions but the centre (the pixel itself), drawn uniformly.
        centre = (self.window**ndim) // 2
        position = rng.integers(self.window**ndim - 1, size=pixels.shape[1])
        position += position >= centre
        offsets = np.stack(np.unravel_index(position, (self.window,) * ndim)) - half
        top = np.array(shape)[:, None] - 1
        moved = np.abs(pixels + offsets)
        moved = np.where(moved > top, 2 * top - moved, moved)
        return tuple(np.clip(moved, 0, top))
