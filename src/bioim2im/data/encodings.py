"""Instance-label targets that a loss asks for, instead of the task's default encoding.

A loss registered with ``encode_target=function`` is trained against ``function(labels)``,
where ``labels`` is the augmented instance-label patch (1, *spatial) as float32 (0 =
background); with ``out_channels=function(spatial_dims)`` it also names the output channels its
head must have, which ``bioim2im check`` enforces. Both run on each training patch after
augmentation, in the data-loading workers, so they are plain numpy and fast. The built-in
instance components register them, so this module imports numpy only when they run: listing
and checking components stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def foreground_and_distance(labels: np.ndarray) -> np.ndarray:
    """(foreground, distance) float32: the distance of each object voxel to its object's own
    border, divided by the largest in that object (1 at its innermost voxels, 0 at its border
    and in the background).

    Normalising per object makes small and large nuclei peak alike, so one seed threshold finds
    both; measuring to the object's own border makes touching neighbours dip to 0 between them.
    """
    import numpy as np
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    ids = labels[0].astype(np.int64)
    foreground = ids > 0
    # The objects' outermost voxels are 0, so distances fall to 0 where neighbours touch.
    interior = foreground & ~find_boundaries(ids, mode="inner")
    distance = ndimage.distance_transform_edt(interior)
    largest = ndimage.maximum(distance, ids, index=np.arange(ids.max() + 1))
    largest = np.maximum(np.asarray(largest, dtype=np.float64), 1.0)
    normalised = np.where(foreground, distance / largest[ids], 0.0)
    return np.stack([foreground, normalised]).astype(np.float32)


def distance_channels(spatial_dims: int) -> int:
    return 2


def instance_labels(labels: np.ndarray) -> np.ndarray:
    """The instance labels themselves (the loss finds each object's voxels)."""
    import numpy as np

    return labels.astype(np.float32, copy=False)


def embedding_channels(spatial_dims: int) -> int:
    """An offset and a bandwidth per axis, and the seed map."""
    return 2 * spatial_dims + 1


def embedding_directions(spatial_dims: int) -> dict[int, int]:
    """The offsets: channel ``a`` is the offset along spatial axis ``a``."""
    return {axis: axis for axis in range(spatial_dims)}
