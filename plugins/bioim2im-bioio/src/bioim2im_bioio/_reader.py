"""The bioio reader: a bioim2im lazy image over bioio's dask arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioim2im.errors import UserError
from bioim2im.io.base import ArrayImage, check_dtype, voxel_size_for

# bioio's dimension letters in the order it gives them; its S is a pixel's colour samples.
ORDER = "TCZYXS"


class BioioImage(ArrayImage):
    """A file read through bioio: region reads compute only the chunks they cover."""

    axes_in_file = True

    def __init__(self, path: Path, level: int) -> None:
        array, axes, voxel_size = _open(path, level)
        self.level = level
        super().__init__(path, array.shape, check_dtype(path, array.dtype), axes, voxel_size)

    def _open(self) -> Any:
        array, _, _ = _open(Path(self.path), self.level)
        return _Computed(array)


class _Computed:
    """Slicing computes the dask array's region in this thread (no thread pool in each data
    loading process)."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def __getitem__(self, region: tuple[slice, ...]) -> Any:
        return self.array[region].compute(scheduler="synchronous")


def open_bioio(path: Path, *, level: int = 0) -> BioioImage:
    return BioioImage(path, level)


def _open(path: Path, level: int) -> tuple[Any, str, tuple[float, ...] | None]:
    """(dask array, axes, voxel size in micrometres) of every scene of ``path``."""
    import dask.array as da
    from bioio import BioImage
    from bioio_base.exceptions import UnsupportedFileFormatError

    try:
        image = BioImage(path)
    except UnsupportedFileFormatError:
        raise UserError(
            f"{path}: no installed bioio plugin reads this file (e.g. pip install bioio-czi "
            "for .czi)"
        ) from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    scenes = []
    for scene in image.scenes:
        image.set_scene(scene)
        levels = image.resolution_levels
        if level not in levels:
            raise UserError(
                f"{path}: resolution level {level} does not exist (levels: "
                f"{', '.join(map(str, levels))})"
            )
        image.set_resolution_level(level)
        order = "".join(a for a in ORDER if a in image.dims.order)
        scenes.append((image.get_image_dask_data(order), order, image.physical_pixel_sizes))
    first, order, sizes = scenes[0]
    if len(scenes) > 1 and all(s[0].shape == first.shape and s[0].dtype == first.dtype
                               for s in scenes):  # fmt: skip
        # Scenes of one shape: samples of one image (S in bioim2im's letters).
        array, axes = da.stack([s[0] for s in scenes]), "s" + order
    else:
        array, axes = first, order
    array, axes = _keep(array, axes)
    by_letter = {"Z": sizes.Z, "Y": sizes.Y, "X": sizes.X}
    return array, axes, voxel_size_for(axes, by_letter)


def _keep(array: Any, axes: str) -> tuple[Any, str]:
    """Singleton T, C, Z and colour samples left out; colour samples as channels; bioio's
    lower-case scene stack named S."""
    if "S" in axes and "C" in axes and array.shape[axes.index("C")] == 1:
        # Colour samples are the channels of an RGB image.
        array = array.squeeze(axis=axes.index("C"))
        axes = axes.replace("C", "")
        array = array.transpose(*[i for i in range(array.ndim) if axes[i] != "S"],
                                axes.index("S"))  # fmt: skip
        axes = axes.replace("S", "") + "C"
    for letter in "TCZS":
        if letter in axes and array.shape[axes.index(letter)] == 1:
            array = array.squeeze(axis=axes.index(letter))
            axes = axes.replace(letter, "")
    return array, axes.replace("s", "S")
