"""napari layers and bioim2im images: a layer seen as a lazy image (so that bioim2im predicts it
block by block, as it predicts a file), and prediction arrays made into layer data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LayerData = tuple[Any, dict[str, Any], str]
AXES_LETTERS = "STCZYX"
SPATIAL = "ZYX"


def guess_axes(shape: Sequence[int], *, rgb: bool = False) -> str:
    """bioim2im's rule for an image without axis names: 2D ``YX``; 3D ``YXC`` (RGB), ``CYX``
    when the first size is at most 4, else ``ZYX``; 4D ``CZYX``; 5D ``TCZYX``."""
    ndim = len(shape)
    if rgb:
        return {3: "YXC", 4: "ZYXC"}.get(ndim, "")
    if ndim == 2:
        return "YX"
    if ndim == 3:
        return "CYX" if shape[0] <= 4 else "ZYX"
    return {4: "CZYX", 5: "TCZYX"}.get(ndim, "")


def check_axes(axes: str, ndim: int, name: str) -> str:
    axes = axes.strip().upper()
    if (
        len(axes) != ndim
        or len(set(axes)) != len(axes)
        or any(a not in AXES_LETTERS for a in axes)
        or "Y" not in axes
        or "X" not in axes
    ):
        from bioim2im.api import UserError

        raise UserError(
            f"layer '{name}': axes '{axes}' do not describe its {ndim} dimensions; give one "
            f"letter of {AXES_LETTERS} per dimension, Y and X included (e.g. "
            f"'{guess_axes([8] * ndim) or 'TCZYX'}')"
        )
    return axes


def level0(layer: Any) -> Any:
    """The full-resolution data of a layer (the first level of a multiscale one)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


class LayerImage:
    """A napari layer's data as a bioim2im lazy image (``bioim2im.io.LazyImage``): bioim2im
    reads it region by region, so a lazily loaded (dask, zarr) layer is never loaded whole."""

    def __init__(self, layer: Any, axes: str | None = None) -> None:
        data = level0(layer)
        self.path = str(layer.name)
        self.data = data
        self.shape = tuple(int(n) for n in data.shape)
        self.dtype = np.dtype(data.dtype)
        given = axes.strip() if axes else ""
        rgb = bool(getattr(layer, "rgb", False))
        self.axes = check_axes(given or guess_axes(self.shape, rgb=rgb), len(self.shape), self.path)
        self.voxel_size = None

    def read(self, region: tuple[slice, ...] | None = None) -> np.ndarray:
        block = self.data if region is None else self.data[region]
        return np.array(block)

    def close(self) -> None:
        """Nothing to release."""


def output_layers(
    outputs: Mapping[str, np.ndarray],
    *,
    axes: str,
    shape: Sequence[int],
    scale: Sequence[float],
    translate: Sequence[float],
    labels_heads: set[str] | None = None,
) -> list[LayerData]:
    """Layer data for each head's output, named after the head, placed over the input layer
    (``axes``, ``shape``, ``scale`` and ``translate`` of the input's data).

    A head's output is ``(T, C, *spatial)`` without T when the input has none; a head that
    upsamples gets a finer scale, one that projects away Z loses it. Integer outputs (instance
    labels, class maps, masks) become labels layers, and so do ``labels_heads``; one channel
    is dropped, several channels become one image layer each (labels: one layer per channel).
    """
    by_letter = {
        a: (float(s), float(t), int(n))
        for a, s, t, n in zip(axes, scale, translate, shape, strict=True)
    }
    in_spatial = [a for a in axes if a in SPATIAL]
    layers: list[LayerData] = []
    for head, array in outputs.items():
        timed = "T" in axes
        ndim_spatial = array.ndim - (2 if timed else 1)
        spatial = in_spatial[len(in_spatial) - ndim_spatial :]
        out_scale, out_translate = [], []
        if timed:
            out_scale.append(by_letter["T"][0])
            out_translate.append(by_letter["T"][1])
        for letter, size in zip(spatial, array.shape[-ndim_spatial:], strict=True):
            s, t, n = by_letter[letter]
            out_scale.append(s * n / size)
            # The pixel centres of an upsampled output lie between the input's.
            out_translate.append(t + (s * n / size - s) / 2)
        channel_axis = 1 if timed else 0
        is_labels = array.dtype.kind in "uib" or head in (labels_heads or set())
        channels = array.shape[channel_axis]
        common = {
            "scale": out_scale,
            "translate": out_translate,
            "metadata": {"bioim2im_head": head},
        }
        if channels == 1:
            data = np.take(array, 0, axis=channel_axis)
            if is_labels:
                layers.append((_as_labels(data), {"name": head, **common}, "labels"))
            else:
                layers.append((data, {"name": head, **common}, "image"))
            continue
        for c in range(channels):
            data = np.take(array, c, axis=channel_axis)
            name = f"{head} {c}"
            if is_labels:
                layers.append((_as_labels(data), {"name": name, **common}, "labels"))
            else:
                layers.append((data, {"name": name, **common}, "image"))
    return layers


def _as_labels(data: np.ndarray) -> np.ndarray:
    """Labels layers take integers; a 0/1 mask stays 0/1."""
    return data.astype(np.uint8) if data.dtype == bool else data


def geometry(layer: Any) -> tuple[list[float], list[float]]:
    """The layer's scale and translate, one value per dimension of its data (an RGB layer's
    colour axis has none in napari: it gets 1 and 0)."""
    scale = [float(s) for s in layer.scale]
    translate = [float(t) for t in layer.translate]
    if getattr(layer, "rgb", False):
        scale.append(1.0)
        translate.append(0.0)
    return scale, translate
