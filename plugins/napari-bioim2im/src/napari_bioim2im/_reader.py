"""The reader: bioim2im's predictions (OME-Zarr with its labels, TIFF), the images it reads, and
run directories, as napari layers placed by their scale and translation.

- An OME-Zarr image (NGFF 0.4 on zarr v2, 0.5 on zarr v3) opens lazily with all its pyramid
  levels, its scale and translation (level 0's transformations, then the image's), as a labels
  layer when it is a label image (``image-label``), and with the label images of its
  ``labels/`` group. A container of images (``cells.ome.zarr/<head>`` and
  ``cells.ome.zarr/labels/<head>``, what ``bioim2im predict`` writes) opens every image in it,
  named ``<stem>_<head>``.
- A TIFF opens lazily through ``bioim2im.io.open_image`` (axes and voxel size from its
  metadata); it is a labels layer when the ``predictions.csv`` beside it lists it with an
  integer type (a label or mask output of ``bioim2im predict --format tiff``).
- A run directory (``preset.toml`` and ``checkpoints/``) opens its validation images with their
  ground truth (labels layers for segmentation heads) and its latest prediction snapshot
  (``snapshots/step_*.png``: input | target | prediction of a validation patch).

A channel axis of one is dropped; several channels become one layer each.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_bioim2im._layers import LayerData
from napari_bioim2im._work import error_message, notify_error

TIFF_SUFFIXES = (".tif", ".tiff")
Reader = Callable[[Any], list[LayerData]]


def get_reader(path: str | Sequence[str]) -> Reader | None:
    """napari's reader hook: a function for what bioim2im opens, else None."""
    if isinstance(path, (list, tuple)):
        if not path or not all(what_is(Path(p)) for p in path):
            return None
        return read
    return read if what_is(Path(path)) else None


def what_is(path: Path) -> str | None:
    """``run``, ``zarr`` or ``tiff``; None for what this reader leaves to others."""
    if path.is_dir() and (path / "preset.toml").is_file() and (path / "checkpoints").is_dir():
        return "run"
    name = path.name.lower()
    if name.endswith(".zarr") or (path.is_dir() and _is_zarr_node(path)):
        return "zarr"
    if name.endswith(TIFF_SUFFIXES) and path.is_file():
        return "tiff"
    return None


def _is_zarr_node(path: Path) -> bool:
    return any((path / marker).is_file() for marker in ("zarr.json", ".zgroup", ".zarray"))


def read(path: str | Sequence[str]) -> list[LayerData]:
    """The layers of one path or several; a path bioim2im cannot read is one notification
    with bioim2im's message, and its layers are left out."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers: list[LayerData] = []
    for one in paths:
        try:
            layers += read_path(Path(one))
        except Exception as exc:
            notify_error(error_message(exc))
    return layers


def read_path(path: Path, *, name: str | None = None) -> list[LayerData]:
    kind = what_is(path)
    if kind == "run":
        return run_layers(path)
    if kind == "zarr":
        return zarr_layers(path, name=name)
    if kind == "tiff":
        return tiff_layers(path, name=name)
    from bioim2im.api import UserError

    raise UserError(f"{path}: not an OME-Zarr image, a TIFF file or a bioim2im run directory")


# --- OME-Zarr ----------------------------------------------------------------------------------


def zarr_layers(
    path: Path, *, name: str | None = None, prefix: str | None = None
) -> list[LayerData]:
    """The layers of an OME-Zarr image or of a container of them; the images of a container
    are named ``<prefix><key>`` (default prefix: ``<stem>_``)."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        from bioim2im.api import UserError

        raise UserError(f"{path}: cannot open as zarr ({exc})") from exc
    stem = _stem(path)
    if isinstance(node, zarr.Array):
        return _plain_array(node, name or stem)
    from bioim2im.io.ngff import container_images

    images = container_images(node)
    if images is None:
        return image_group_layers(node, name or stem)
    # A container of images: one per prediction head (label images under labels/; its top
    # may show one of them to other readers).
    layers: list[LayerData] = []
    if prefix is None:
        prefix = f"{name or stem}_"
    for key, where in sorted(images.items()):
        layers += image_group_layers(node[where], f"{prefix}{key}")
    if not layers:
        from bioim2im.api import UserError

        raise UserError(f"{path}: no OME-Zarr image in it (no multiscales metadata)")
    return layers


def _plain_array(array: Any, name: str) -> list[LayerData]:
    import dask.array as da

    return [(da.from_zarr(array), {"name": name}, "image")]


def _ome(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    ome = attrs.get("ome")
    return ome if isinstance(ome, Mapping) else attrs


def _multiscales(group: Any) -> dict[str, Any] | None:
    entries = _ome(group.attrs.asdict()).get("multiscales")
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        return entries[0]
    return None


def _transforms(entry: Mapping[str, Any], ndim: int) -> tuple[list[float], list[float]]:
    """Level 0's scale and translation, the image-wide transformations applied after."""
    scale, translate = [1.0] * ndim, [0.0] * ndim
    steps = [
        *entry["datasets"][0].get("coordinateTransformations", []),
        *entry.get("coordinateTransformations", []),
    ]
    for step in steps:
        if step.get("type") == "scale" and "scale" in step:
            scale = [s * f for s, f in zip(scale, step["scale"], strict=True)]
            translate = [t * f for t, f in zip(translate, step["scale"], strict=True)]
        elif step.get("type") == "translation" and "translation" in step:
            translate = [t + d for t, d in zip(translate, step["translation"], strict=True)]
    return scale, translate


def _axis_names(entry: Mapping[str, Any], ndim: int) -> str:
    letters = ""
    for axis in entry.get("axes", []):
        name = str(axis.get("name", "") if isinstance(axis, Mapping) else axis).upper()
        kind = axis.get("type") if isinstance(axis, Mapping) else None
        letters += {"channel": "C", "time": "T"}.get(str(kind), name[:1] or "?")
    return letters if len(letters) == ndim else "?" * ndim


def image_group_layers(group: Any, name: str) -> list[LayerData]:
    """One NGFF image (all its levels) and the label images of its ``labels/`` group."""
    import dask.array as da

    entry = _multiscales(group)
    assert entry is not None
    levels = [da.from_zarr(group[d["path"]]) for d in entry["datasets"]]
    ndim = levels[0].ndim
    scale, translate = _transforms(entry, ndim)
    axes = _axis_names(entry, ndim)
    labels = "image-label" in _ome(group.attrs.asdict())
    layers = _split_channels(levels, axes, scale, translate, name, labels)
    if "labels" in group and not labels:
        label_group = group["labels"]
        for key in _ome(label_group.attrs.asdict()).get("labels", []):
            if key in label_group and _multiscales(label_group[key]) is not None:
                layers += image_group_layers(label_group[key], f"{name} {key}")
    return layers


def _split_channels(
    levels: list[Any],
    axes: str,
    scale: Sequence[float],
    translate: Sequence[float],
    name: str,
    labels: bool,
) -> list[LayerData]:
    """Layers of one image: without its channel axis when it has one channel, else a layer
    per channel."""
    kind = "labels" if labels else "image"
    multiscale = len(levels) > 1
    if "C" not in axes:
        data = levels if multiscale else levels[0]
        return [(data, _kwargs(name, scale, translate, multiscale, axes), kind)]
    c = axes.index("C")
    keep = [i for i in range(len(axes)) if i != c]
    kept_scale = [scale[i] for i in keep]
    kept_translate = [translate[i] for i in keep]
    kept_axes = "".join(axes[i] for i in keep)
    channels = levels[0].shape[c]
    layers = []
    for channel in range(channels):
        picked = [np.take(level, channel, axis=c) for level in levels]
        data = picked if multiscale else picked[0]
        label = name if channels == 1 else f"{name} {channel}"
        layers.append(
            (data, _kwargs(label, kept_scale, kept_translate, multiscale, kept_axes), kind)
        )
    return layers


def _kwargs(
    name: str, scale: Sequence[float], translate: Sequence[float], multiscale: bool, axes: str
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": list(scale),
        "translate": list(translate),
        "metadata": {"bioim2im_axes": axes},
    }
    if multiscale:
        kwargs["multiscale"] = True
    return kwargs


# --- TIFF and other files bioim2im reads -----------------------------------------------------


class _Lazy:
    """A bioim2im lazy image as an array dask can slice."""

    def __init__(self, image: Any) -> None:
        self.image = image
        self.shape = tuple(image.shape)
        self.dtype = np.dtype(image.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        region = tuple(k if isinstance(k, slice) else slice(k, k + 1) for k in key)
        block = self.image.read(region)
        drop = tuple(i for i, k in enumerate(key) if not isinstance(k, slice))
        return block.squeeze(axis=drop) if drop else block


def image_file_layers(
    path: Path, *, name: str | None = None, labels: bool = False
) -> list[LayerData]:
    """Any image bioim2im reads (``bioim2im.io.open_image``), lazily, with its voxel size."""
    import dask.array as da

    from bioim2im.io import open_image

    image = open_image(path)
    axes = image.axes
    chunks = tuple(n if a in "YX" else 1 for a, n in zip(axes, image.shape, strict=True))
    data = da.from_array(_Lazy(image), chunks=chunks)
    sizes = dict(zip((a for a in axes if a in "ZYX"), image.voxel_size or (), strict=False))
    scale = [float(sizes.get(a, 1.0)) for a in axes]
    translate = [0.0] * len(axes)
    return _split_channels([data], axes, scale, translate, name or _stem(path), labels)


def tiff_layers(path: Path, *, name: str | None = None) -> list[LayerData]:
    return image_file_layers(path, name=name, labels=_listed_as_labels(path))


def _listed_as_labels(path: Path) -> bool:
    """Whether ``predictions.csv`` beside ``path`` lists it as an integer (label) output."""
    table = path.parent / "predictions.csv"
    if not table.is_file():
        return False
    try:
        with table.open(newline="", encoding="utf-8") as file:
            for row in csv.DictReader(file):
                if row.get("output") == path.name:
                    return np.dtype(row.get("dtype") or "float32").kind in "uib"
    except (OSError, ValueError, TypeError, csv.Error):
        return False
    return False


# --- run directories -----------------------------------------------------------------------


def run_layers(run_dir: Path) -> list[LayerData]:
    """A run's validation images, their ground truth and its latest prediction snapshot."""
    from bioim2im import api

    preset = api.load_preset(run_dir / "preset.toml")
    label_heads = {
        name for name, head in preset.model.heads.items() if head.task in ("semantic", "instance")
    }
    layers: list[LayerData] = []
    for found in api.validation_images(run_dir):
        layers += image_file_layers(found.image, name=f"{found.name} (validation)")
        for head, target in found.targets.items():
            layers += image_file_layers(
                target, name=f"{found.name} {head} truth", labels=head in label_heads
            )
    snapshot = latest_snapshot(run_dir)
    if snapshot is not None:
        from PIL import Image

        step = int(re.findall(r"\d+", snapshot.stem)[-1])
        with Image.open(snapshot) as image:
            pixels = np.asarray(image.convert("RGB"))
        name = f"{run_dir.name} step {step}: input | target | prediction"
        layers.append((pixels, {"name": name, "rgb": True}, "image"))
    return layers


def latest_snapshot(run_dir: Path) -> Path | None:
    snapshots = [
        (int(m.group(1)), p)
        for p in (run_dir / "snapshots").glob("step_*.png")
        if (m := re.fullmatch(r"step_(\d+)\.png", p.name))
    ]
    return max(snapshots)[1] if snapshots else None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
