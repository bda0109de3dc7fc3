"""Image files in and out: one lazy interface for reading, atomic writers, a streaming writer.

- :func:`open_image` returns a :class:`LazyImage` whatever the format (TIFF, OME-TIFF, zarr,
  OME-Zarr); its ``read(region)`` loads only that region.
- :func:`write_image` writes OME-Zarr or OME-TIFF, appearing at its path only once complete.
- :class:`OmeZarrStreamWriter` writes block-wise predictions, resumably.
"""

from __future__ import annotations

from bioim2im.io.base import SUPPORTED_DTYPES, LazyImage, infer_axes, spatial_axes
from bioim2im.io.dispatch import open_image, write_image
from bioim2im.io.omezarr import OmeZarrStreamWriter, StreamedImage

__all__ = [
    "SUPPORTED_DTYPES",
    "LazyImage",
    "OmeZarrStreamWriter",
    "StreamedImage",
    "infer_axes",
    "open_image",
    "spatial_axes",
    "write_image",
]
