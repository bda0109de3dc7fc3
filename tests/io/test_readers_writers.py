"""Readers and writers: round trips, pyramids, laziness, atomic writes, streaming, errors."""

from __future__ import annotations

import itertools
import json
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
import zarr.storage
from tifffile.zarr import ZarrTiffStore

from bioim2im.builtins import io as io_plugin
from bioim2im.errors import UserError
from bioim2im.io import LazyImage, OmeZarrStreamWriter, infer_axes, omezarr, open_image, write_image
from bioim2im.plugin.registry import ComponentRegistry, Registrar

FORMATS = {
    "zarr-v2": ("img.ome.zarr", {"zarr_format": 2}),
    "zarr-v3": ("img.ome.zarr", {"zarr_format": 3, "compression": "gzip"}),
    "ome-tiff-zlib": ("img.ome.tif", {"compression": "zlib"}),
    "tiff-raw": ("img.tif", {"compression": "none"}),
}
IMAGES = {
    "2d": ("YX", (40, 50), (0.25, 0.25)),
    "3d": ("ZYX", (6, 40, 50), (2.0, 0.5, 0.5)),
    "channels": ("CYX", (3, 40, 50), (0.3, 0.3)),
    "channels-3d": ("CZYX", (2, 5, 40, 50), (1.5, 0.2, 0.2)),
    "time": ("TYX", (4, 40, 50), (0.1, 0.1)),
    "time-channels-3d": ("TCZYX", (3, 2, 4, 40, 50), (1.0, 0.5, 0.25)),
}


@pytest.fixture
def registry() -> ComponentRegistry:
    reg = ComponentRegistry()
    io_plugin.bioim2im_register_readers(Registrar(reg, "reader", "bioim2im", "0"))
    io_plugin.bioim2im_register_writers(Registrar(reg, "writer", "bioim2im", "0"))
    return reg


def random_image(shape: tuple[int, ...], dtype: str = "uint16", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=shape).astype(dtype)
    if np.dtype(dtype) == bool:
        return rng.random(shape) > 0.5
    return rng.integers(0, 200, size=shape).astype(dtype)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path: Path, registry: ComponentRegistry, fmt: str, image: str) -> None:
    name, options = FORMATS[fmt]
    axes, shape, voxel_size = IMAGES[image]
    data = random_image(shape)
    path = write_image(
        tmp_path / name, data, axes=axes, voxel_size=voxel_size, registry=registry, **options
    )
    with open_image(path, registry=registry) as loaded:
        assert isinstance(loaded, LazyImage)
        assert (loaded.axes, loaded.shape, loaded.dtype) == (axes, shape, data.dtype)
        assert loaded.voxel_size == pytest.approx(voxel_size)
        np.testing.assert_array_equal(loaded.read(), data)
        region = tuple(slice(1, n - 1) for n in shape)
        np.testing.assert_array_equal(loaded.read(region), data[region])


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int16", "uint32", "float32", "float64"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_dtypes(
    tmp_path: Path, registry: ComponentRegistry, fmt: str, dtype: str
) -> None:
    name, options = FORMATS[fmt]
    data = random_image((20, 30), dtype)
    path = write_image(tmp_path / name, data, axes="YX", registry=registry, **options)
    loaded = open_image(path, registry=registry)
    assert loaded.dtype == data.dtype
    assert loaded.voxel_size is None
    np.testing.assert_array_equal(loaded.read(), data)


def test_tiff_stores_64bit_labels_as_32bit(tmp_path: Path, registry: ComponentRegistry) -> None:
    labels = np.arange(20 * 30, dtype=np.int64).reshape(20, 30)
    path = write_image(tmp_path / "labels.tif", labels, axes="YX", is_label=True, registry=registry)
    loaded = open_image(path, registry=registry)
    assert loaded.dtype == np.uint32
    np.testing.assert_array_equal(loaded.read(), labels)
    with pytest.raises(UserError, match="32-bit"):
        write_image(tmp_path / "big.tif", labels - 2**40, axes="YX", registry=registry)


@pytest.mark.parametrize("name", ["rgb.ome.zarr", "rgb.tif"])
def test_writers_store_axes_in_ome_order(
    tmp_path: Path, registry: ComponentRegistry, name: str
) -> None:
    rgb = random_image((20, 30, 3), "uint8")
    path = write_image(tmp_path / name, rgb, axes="YXC", voxel_size=(0.5, 0.25), registry=registry)
    loaded = open_image(path, registry=registry)
    assert loaded.axes == "CYX"
    assert loaded.voxel_size == pytest.approx((0.5, 0.25))
    np.testing.assert_array_equal(loaded.read(), np.moveaxis(rgb, -1, 0))


def test_writer_picked_by_format_and_options_validated(
    tmp_path: Path, registry: ComponentRegistry
) -> None:
    data = random_image((8, 8))
    path = write_image(tmp_path / "out.zarr", data, axes="YX", format="ome-zarr", registry=registry)
    assert open_image(path, registry=registry).axes == "YX"
    with pytest.raises(UserError, match="unknown output format 'png'"):
        write_image(tmp_path / "out.png", data, axes="YX", format="png", registry=registry)
    with pytest.raises(UserError, match="invalid options") as info:
        write_image(tmp_path / "x.tif", data, axes="YX", zarr_format=3, registry=registry)
    assert "zarr_format" in str(info.value)
    with pytest.raises(UserError, match="no S"):
        write_image(tmp_path / "s.ome.zarr", np.zeros((2, 8, 8)), axes="SYX", registry=registry)
    with pytest.raises(UserError, match="voxel_size"):
        write_image(tmp_path / "v.tif", data, axes="YX", voxel_size=(1.0,), registry=registry)


# ---------------------------------------------------------------- metadata and axes


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((64, 64), "YX"),
        ((64, 64, 3), "YXC"),
        ((3, 64, 64), "CYX"),
        ((30, 64, 64), "ZYX"),
        ((2, 10, 64, 64), "CZYX"),
        ((5, 2, 10, 64, 64), "TCZYX"),
        ((1, 1, 1, 1, 1, 1), None),
    ],
)
def test_axes_inference_rule(shape: tuple[int, ...], axes: str | None) -> None:
    assert infer_axes(shape) == axes


def test_plain_tiff_axes_from_argument_or_rule(tmp_path: Path, registry: ComponentRegistry) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, random_image((3, 16, 16)), photometric="minisblack")
    assert open_image(path, registry=registry).axes == "CYX"
    assert open_image(path, axes="zyx", registry=registry).axes == "ZYX"
    with pytest.raises(UserError, match=r"plain\.tif.*axes 'CZYX'"):
        open_image(path, axes="CZYX", registry=registry)
    with pytest.raises(UserError, match="letters from STCZYX"):
        open_image(path, axes="QYX", registry=registry)


def test_metadata_axes_win_over_argument(tmp_path: Path, registry: ComponentRegistry) -> None:
    path = write_image(
        tmp_path / "a.ome.tif", random_image((3, 16, 16)), axes="ZYX", registry=registry
    )
    assert open_image(path, axes="CYX", registry=registry).axes == "ZYX"


def test_imagej_voxel_size(tmp_path: Path, registry: ComponentRegistry) -> None:
    path = tmp_path / "ij.tif"
    data = random_image((5, 16, 16))
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(4.0, 2.0),
        metadata={"spacing": 3.0, "unit": "um", "axes": "ZYX"},
    )
    loaded = open_image(path, registry=registry)
    assert loaded.axes == "ZYX"
    assert loaded.voxel_size == pytest.approx((3.0, 0.5, 0.25))


def test_ome_tiff_voxel_size_units(tmp_path: Path, registry: ComponentRegistry) -> None:
    path = tmp_path / "nm.ome.tif"
    metadata = {"axes": "YX", "PhysicalSizeX": 100.0, "PhysicalSizeXUnit": "nm"}
    tifffile.imwrite(
        path,
        random_image((16, 16)),
        ome=True,
        metadata={**metadata, "PhysicalSizeY": 200.0, "PhysicalSizeYUnit": "nm"},
    )
    assert open_image(path, registry=registry).voxel_size == pytest.approx((0.2, 0.1))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_array(tmp_path: Path, registry: ComponentRegistry, zarr_format: int) -> None:
    data = random_image((3, 20, 30))
    names = {"dimension_names": ["z", "y", "x"]} if zarr_format == 3 else {}
    array = zarr.create_array(
        tmp_path / "a.zarr",
        shape=data.shape,
        dtype=data.dtype,
        chunks=(1, 10, 10),
        zarr_format=zarr_format,
        **names,
    )
    array[:] = data
    loaded = open_image(tmp_path / "a.zarr", registry=registry)
    assert loaded.axes == ("ZYX" if zarr_format == 3 else "CYX")
    assert loaded.voxel_size is None
    np.testing.assert_array_equal(
        loaded.read((slice(1, 2), slice(5, 15), slice(None))), data[1:2, 5:15]
    )
    with pytest.raises(UserError, match="no pyramid level 1"):
        open_image(tmp_path / "a.zarr", level=1, registry=registry)


def test_lazy_images_pickle_without_their_file_handles(
    tmp_path: Path, registry: ComponentRegistry
) -> None:
    data = random_image((300, 300))
    path = write_image(
        tmp_path / "a.tif", data, axes="YX", registry=registry
    )  # tiled: a file handle
    image = open_image(path, registry=registry)
    image.read((slice(0, 2), slice(0, 2)))
    copy = pickle.loads(pickle.dumps(image))
    np.testing.assert_array_equal(copy.read(), data)
    copy.close()
    image.close()


def test_a_forked_worker_reopens_the_file(
    tmp_path: Path, registry: ComponentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_image((300, 300))
    path = write_image(tmp_path / "a.tif", data, axes="YX", registry=registry)
    image = open_image(path, registry=registry)
    image.read((slice(0, 2), slice(0, 2)))
    # Inherited handles share the parent's file offset: the "child" must open its own.
    monkeypatch.setattr("os.getpid", lambda: -1)
    np.testing.assert_array_equal(image.read(), data)
    image.close()


def test_zarr_image_path_is_the_path_opened(tmp_path: Path, registry: ComponentRegistry) -> None:
    path = write_image(tmp_path / "a.ome.zarr", random_image((8, 8)), axes="YX", registry=registry)
    assert open_image(path, registry=registry).path == str(path)


# ---------------------------------------------------------------- pyramids


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_pyramid_levels(tmp_path: Path, registry: ComponentRegistry, zarr_format: int) -> None:
    data = np.arange(8 * 64 * 50, dtype=np.float32).reshape(8, 64, 50)
    path = write_image(
        tmp_path / "p.ome.zarr",
        data,
        axes="ZYX",
        voxel_size=(0.5, 0.5, 0.5),
        pyramid_levels=2,
        zarr_format=zarr_format,
        registry=registry,
    )
    level1 = open_image(path, level=1, registry=registry)
    assert level1.shape == (4, 32, 25)
    assert level1.voxel_size == pytest.approx((1.0, 1.0, 1.0))
    np.testing.assert_allclose(level1.read()[0, 0, 0], data[:2, :2, :2].mean())
    level2 = open_image(path, level=2, registry=registry)
    assert level2.shape == (2, 16, 13)
    # The odd last column is averaged with a copy of itself, not with zeros.
    np.testing.assert_allclose(level2.read()[0, 0, -1], data[:4, :4, 48:50].mean())
    with pytest.raises(UserError, match="level 3 requested but the image has 3"):
        open_image(path, level=3, registry=registry)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.uint16])
@pytest.mark.parametrize(
    ("shape", "factor"),
    [((1, 3, 33, 65, 67), (1, 1, 2, 2, 2)), ((2, 7, 9), (1, 2, 2)), ((5, 64, 50), (1, 2, 2))],
)
def test_a_level_is_the_mean_of_each_cell_as_scikit_image_takes_it(
    dtype: type, shape: tuple[int, ...], factor: tuple[int, ...]
) -> None:
    from skimage.measure import block_reduce

    from bioim2im.io.omezarr import downsample

    data = (np.random.default_rng(3).random(shape) * 1000).astype(dtype)
    # Odd sizes: the last cell averages the edge with a copy of itself.
    padded = np.pad(data, [(0, -n % f) for n, f in zip(shape, factor, strict=True)], mode="edge")
    expected = block_reduce(padded, factor, np.mean)
    if np.dtype(dtype).kind == "u":
        expected = np.rint(expected)
    found = downsample(data, factor, nearest=False)
    assert found.dtype == dtype
    assert found.shape == expected.shape
    np.testing.assert_allclose(
        found, expected.astype(dtype), rtol=1e-6 if dtype != np.float16 else 1e-3
    )


def test_anisotropic_z_is_not_halved_until_it_is_as_fine_as_y(
    tmp_path: Path, registry: ComponentRegistry
) -> None:
    data = random_image((8, 64, 64))
    path = write_image(
        tmp_path / "a.zarr",
        data,
        axes="ZYX",
        voxel_size=(2.0, 1.0, 1.0),
        pyramid_levels=2,
        registry=registry,
    )
    assert open_image(path, level=1, registry=registry).shape == (8, 32, 32)
    assert open_image(path, level=2, registry=registry).shape == (4, 16, 16)


def test_label_pyramid_takes_pixels_and_is_marked_as_label(
    tmp_path: Path, registry: ComponentRegistry
) -> None:
    labels = np.random.default_rng(1).integers(0, 5, (64, 64)).astype(np.uint16)
    path = write_image(
        tmp_path / "l.ome.zarr",
        labels,
        axes="YX",
        is_label=True,
        pyramid_levels=1,
        registry=registry,
    )
    np.testing.assert_array_equal(
        open_image(path, level=1, registry=registry).read(), labels[::2, ::2]
    )
    attrs = json.loads((path / ".zattrs").read_text())
    assert attrs["image-label"] == {"version": "0.4"}
    assert attrs["multiscales"][0]["type"] == "nearest"


def test_ngff_metadata_layout(tmp_path: Path, registry: ComponentRegistry) -> None:
    data = random_image((2, 16, 16))
    v2 = write_image(
        tmp_path / "v2.ome.zarr", data, axes="CYX", voxel_size=(0.5, 0.5), registry=registry
    )
    entry = json.loads((v2 / ".zattrs").read_text())["multiscales"][0]
    assert entry["version"] == "0.4"
    assert entry["axes"] == [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    assert entry["datasets"] == [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.5, 0.5]}]}
    ]
    assert json.loads((v2 / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    v3 = write_image(
        tmp_path / "v3.ome.zarr", data, axes="CYX", zarr_format=3, is_label=True, registry=registry
    )
    ome = json.loads((v3 / "zarr.json").read_text())["attributes"]["ome"]
    assert ome["version"] == "0.5"
    assert "image-label" in ome
    assert "unit" not in ome["multiscales"][0]["axes"][1]
    assert json.loads((v3 / "0" / "zarr.json").read_text())["dimension_names"] == ["c", "y", "x"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_output_validates_with_ome_zarr_py(
    tmp_path: Path, registry: ComponentRegistry, zarr_format: int
) -> None:
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    data = random_image((2, 4, 64, 64))
    path = write_image(
        tmp_path / "v.ome.zarr",
        data,
        axes="CZYX",
        voxel_size=(1.0, 0.5, 0.5),
        pyramid_levels=1,
        zarr_format=zarr_format,
        registry=registry,
    )
    nodes = list(reader.Reader(io.parse_url(str(path)))())
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), data)
    assert len(nodes[0].data) == 2


# ---------------------------------------------------------------- laziness


def _count_gets(monkeypatch: pytest.MonkeyPatch, store_class: type) -> list[str]:
    keys: list[str] = []
    original = store_class.get

    async def counting_get(self, key, *args, **kwargs):  # type: ignore[no-untyped-def]
        keys.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(store_class, "get", counting_get)
    return keys


def test_zarr_region_reads_only_its_chunks(
    tmp_path: Path, registry: ComponentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = np.arange(512 * 512, dtype=np.uint16).reshape(512, 512)
    path = write_image(
        tmp_path / "big.ome.zarr", data, axes="YX", chunks=(64, 64), registry=registry
    )
    image = open_image(path, registry=registry)
    keys = _count_gets(monkeypatch, zarr.storage.LocalStore)
    np.testing.assert_array_equal(
        image.read((slice(70, 120), slice(130, 190))), data[70:120, 130:190]
    )
    chunks = [k for k in keys if not k.endswith((".zarray", ".zattrs", ".zgroup", "zarr.json"))]
    assert [k.split("/")[-2:] for k in chunks] == [
        ["1", "2"]
    ]  # the 64 x 64 chunk at row 1, column 2


def test_tiled_tiff_region_decodes_only_its_tiles(
    tmp_path: Path, registry: ComponentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = np.arange(1024 * 1024, dtype=np.uint32).reshape(1024, 1024)
    path = write_image(
        tmp_path / "big.ome.tif", data, axes="YX", compression="zlib", registry=registry
    )
    image = open_image(path, registry=registry)
    keys = _count_gets(monkeypatch, ZarrTiffStore)
    np.testing.assert_array_equal(
        image.read((slice(300, 400), slice(600, 700))), data[300:400, 600:700]
    )
    tiles = [k for k in keys if not k.endswith((".zarray", ".zattrs", ".zgroup", "zarr.json"))]
    assert len(tiles) == 1  # the 256 x 256 tile at row 1, column 2
    image.close()


def test_uncompressed_tiff_region_is_read_through_a_memory_map(
    tmp_path: Path, registry: ComponentRegistry
) -> None:
    data = np.ones((2048, 2048), dtype=np.float32)  # 16 MiB
    path = write_image(tmp_path / "big.tif", data, axes="YX", compression="none", registry=registry)
    image = open_image(path, registry=registry)
    tracemalloc.start()
    block = image.read((slice(1000, 1064), slice(0, 64)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert block.shape == (64, 64)
    assert peak < 1 << 20
    image.close()


# ---------------------------------------------------------------- atomic writes


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_failed_tiff_write_leaves_nothing(
    tmp_path: Path, registry: ComponentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(fh, data, **kwargs):  # type: ignore[no-untyped-def]
        fh.write(b"II*\x00 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", crash)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "out.tif", random_image((16, 16)), axes="YX", registry=registry)
    assert _leftovers(tmp_path) == []


def test_failed_zarr_write_keeps_the_previous_output(
    tmp_path: Path, registry: ComponentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = random_image((16, 16), seed=1)
    path = write_image(tmp_path / "out.ome.zarr", old, axes="YX", registry=registry)

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError("while building the pyramid")

    monkeypatch.setattr(omezarr, "downsample", crash)
    with pytest.raises(MemoryError):
        write_image(
            path, random_image((16, 16), seed=2), axes="YX", pyramid_levels=1, registry=registry
        )
    assert _leftovers(tmp_path) == ["out.ome.zarr"]
    np.testing.assert_array_equal(open_image(path, registry=registry).read(), old)


@pytest.mark.parametrize("name", ["out.ome.zarr", "out.tif"])
def test_successful_write_replaces_existing_output(
    tmp_path: Path, registry: ComponentRegistry, name: str
) -> None:
    write_image(tmp_path / name, random_image((16, 16), seed=1), axes="YX", registry=registry)
    new = random_image((8, 8, 8), seed=2)
    path = write_image(tmp_path / name, new, axes="ZYX", registry=registry)
    assert _leftovers(tmp_path) == [name]
    np.testing.assert_array_equal(open_image(path, registry=registry).read(), new)


# ---------------------------------------------------------------- streaming writer


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_stream_writer_resumes_after_a_crash(
    tmp_path: Path, registry: ComponentRegistry, zarr_format: int
) -> None:
    path = tmp_path / "cells.ome.zarr"
    probs = np.random.default_rng(0).random((2, 40, 70), dtype=np.float32)
    labels = (probs[0] > 0.5).astype(np.uint16)

    def start(resume: bool = True):  # type: ignore[no-untyped-def]
        writer = OmeZarrStreamWriter(path, zarr_format=zarr_format, resume=resume)
        image = writer.create_image(
            "probs",
            shape=probs.shape,
            dtype="float32",
            axes="CYX",
            voxel_size=(0.5, 0.5),
            chunks=(2, 16, 32),
        )
        label = writer.create_image(
            "labels", shape=labels.shape, dtype="uint16", axes="YX", chunks=(16, 32), is_label=True
        )
        return writer, image, label

    writer, image, label = start()
    regions = list(image.regions())
    assert len(regions) == 3 * 3
    for region in regions[:4]:
        image.write(region, probs[region])
        label.write(region[1:], labels[region[1:]])
    del writer, image, label  # the process dies here: nothing published
    assert not path.exists()

    writer, image, label = start()
    assert [image.is_written(r) for r in regions] == [True] * 4 + [False] * 5
    for region in regions:
        if not image.is_written(region):
            image.write(region, probs[region])
            label.write(region[1:], labels[region[1:]])
    assert writer.finalize(pyramid_levels=1) == path
    assert _leftovers(tmp_path) == ["cells.ome.zarr"]

    loaded = open_image(path / "probs", registry=registry)
    assert (loaded.axes, loaded.voxel_size) == ("CYX", pytest.approx((0.5, 0.5)))
    np.testing.assert_array_equal(loaded.read(), probs)
    np.testing.assert_array_equal(open_image(path / "labels", registry=registry).read(), labels)
    assert open_image(path / "labels", level=1, registry=registry).shape == (20, 35)
    with pytest.raises(UserError, match="holds the images labels, probs"):
        open_image(path, registry=registry)


def test_stream_writer_refuses_mismatched_resume_and_unaligned_regions(tmp_path: Path) -> None:
    path = tmp_path / "out.ome.zarr"
    writer = OmeZarrStreamWriter(path)
    image = writer.create_image(None, shape=(64, 64), dtype="uint8", axes="YX", chunks=(32, 32))
    image.write((slice(0, 32), slice(0, 32)), np.ones((32, 32), np.uint8))
    with pytest.raises(ValueError, match="not aligned"):
        image.write((slice(16, 48), slice(0, 32)), np.ones((32, 32), np.uint8))
    with pytest.raises(ValueError, match="does not fit"):
        image.write((slice(32, 64), slice(0, 32)), np.ones((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"image name '\.\./x'"):
        writer.create_image("../x", shape=(64, 64), dtype="uint8", axes="YX")
    with pytest.raises(ValueError, match="order TCZYX"):
        writer.create_image("x", shape=(64, 64, 2), dtype="uint8", axes="YXC")
    with pytest.raises(UserError, match="delete it to start over"):
        OmeZarrStreamWriter(path).create_image(
            None, shape=(64, 65), dtype="uint8", axes="YX", chunks=(32, 32)
        )
    with pytest.raises(UserError, match="zarr v3 was asked for"):
        OmeZarrStreamWriter(path, zarr_format=3)
    fresh = OmeZarrStreamWriter(path, resume=False)
    image = fresh.create_image(None, shape=(64, 64), dtype="uint8", axes="YX", chunks=(32, 32))
    assert not image.is_written((slice(0, 32), slice(0, 32)))
    fresh.discard()
    assert _leftovers(tmp_path) == []


def _streamed(
    path: Path,
    values: dict[str, np.ndarray],
    block: tuple[int, ...],
    *,
    pyramid: bool,
    levels: int,
    stop_after: int | None = None,
    voxel_size: tuple[float, ...] = (1.0, 0.5, 0.5),
) -> Path | None:
    """Write each image of ``values`` ({name: (Z, Y, X) array}, "labels/..." a label image)
    region by region in blocks of ``block``, then finish with ``levels`` pyramid levels (or
    stop after ``stop_after`` blocks, as a killed process would)."""
    writer = OmeZarrStreamWriter(path)
    images = {
        name: writer.create_image(
            name,
            shape=data.shape,
            dtype=data.dtype,
            axes="ZYX",
            voxel_size=voxel_size,
            chunks=(4, 8, 8),
            is_label=name.startswith("labels/"),
            pyramid=pyramid,
        )
        for name, data in values.items()
    }
    shape = next(iter(values.values())).shape
    starts = [range(0, n, b) for n, b in zip(shape, block, strict=True)]
    for count, start in enumerate(itertools.product(*starts)):
        if count == stop_after:
            return None
        region = tuple(slice(s, min(s + b, n)) for s, b, n in zip(start, block, shape, strict=True))
        for name, image in images.items():
            if not image.is_written(region):
                image.write(region, values[name][region])
    return writer.finalize(pyramid_levels=levels)


def _levels(path: Path) -> dict[str, list[np.ndarray]]:
    found = {}
    for name in ("probs", "labels/cells"):
        group = zarr.open_group(path / name, mode="r")
        found[name] = [group[str(k)][:] for k in range(len(list(group.array_keys())))]
    return found


@pytest.mark.parametrize(
    ("voxel_size", "block", "from_blocks"),
    [
        # Z is coarser than Y: the first level halves Y and X only.
        ((1.0, 0.5, 0.5), (8, 16, 32), True),
        ((1.0, 0.5, 0.5), (4, 16, 16), True),
        ((1.0, 0.5, 0.5), (8, 8, 16), False),
        ((1.0, 0.5, 0.5), (12, 24, 40), False),
        # Isotropic: Z halves too.
        ((0.5, 0.5, 0.5), (8, 16, 32), True),
        ((0.5, 0.5, 0.5), (4, 16, 16), False),
    ],
)
def test_the_first_level_written_with_the_regions_is_the_one_built_at_the_end(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    voxel_size: tuple[float, ...],
    block: tuple[int, ...],
    from_blocks: bool,
) -> None:
    """Regions aligned to twice the chunks along the halved axes write the first level as they
    go, and finishing then reads only that level back; other regions leave it to the end.
    Either way every level is the same as when the image is written whole and its pyramid
    built at the end."""
    rng = np.random.default_rng(7)
    probs = rng.random((12, 40, 70), dtype=np.float32)
    values = {"probs": probs, "labels/cells": (probs * 9).astype(np.uint16)}
    whole = _streamed(
        tmp_path / "whole.ome.zarr", values, probs.shape, pyramid=False, levels=2,
        voxel_size=voxel_size,
    )  # fmt: skip
    assert whole is not None
    expected = _levels(whole)
    z = (6, 3) if voxel_size[0] == voxel_size[1] else (12, 6)
    assert [a.shape for a in expected["probs"]] == [(12, 40, 70), (z[0], 20, 35), (z[1], 10, 18)]

    built = []
    real = omezarr._downsample_array
    monkeypatch.setattr(
        omezarr,
        "_downsample_array",
        lambda group, name, *rest: built.append(name) or real(group, name, *rest),
    )
    found = _streamed(
        tmp_path / "blocks.ome.zarr", values, block, pyramid=True, levels=2, voxel_size=voxel_size
    )
    assert found is not None
    assert built == (["2", "2"] if from_blocks else ["1", "2", "1", "2"])
    for name, levels in _levels(found).items():
        for level, (ours, theirs) in enumerate(zip(levels, expected[name], strict=True)):
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{name} level {level}")


def test_a_resumed_image_keeps_the_first_level_its_regions_wrote(tmp_path: Path) -> None:
    probs = np.random.default_rng(8).random((8, 32, 48), dtype=np.float32)
    values = {"probs": probs, "labels/cells": (probs * 9).astype(np.uint16)}
    path = tmp_path / "out.ome.zarr"
    assert _streamed(path, values, (8, 16, 16), pyramid=True, levels=1, stop_after=3) is None
    assert not path.exists()
    _streamed(path, values, (8, 16, 16), pyramid=True, levels=1)
    whole = _streamed(tmp_path / "whole.ome.zarr", values, probs.shape, pyramid=False, levels=1)
    assert whole is not None
    for name, levels in _levels(path).items():
        for ours, theirs in zip(levels, _levels(whole)[name], strict=True):
            np.testing.assert_array_equal(ours, theirs)
    # Finished without a pyramid, an image keeps no first level it wrote on the way.
    bare = _streamed(tmp_path / "bare.ome.zarr", values, (8, 16, 16), pyramid=True, levels=0)
    assert bare is not None
    assert list(zarr.open_group(bare / "probs", mode="r").array_keys()) == ["0"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- user errors


def test_missing_file(tmp_path: Path, registry: ComponentRegistry) -> None:
    with pytest.raises(UserError, match=r"nope\.tif: no such file"):
        open_image(tmp_path / "nope.tif", registry=registry)


def test_unknown_suffix_lists_supported_ones(tmp_path: Path, registry: ComponentRegistry) -> None:
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    with pytest.raises(UserError, match=r"photo.png: unknown image file type.*\.ome\.tif.*\.zarr"):
        open_image(tmp_path / "photo.png", registry=registry)
    with pytest.raises(UserError, match="can be written"):
        write_image(tmp_path / "photo.png", np.zeros((4, 4)), axes="YX", registry=registry)


@pytest.mark.parametrize("compression", ["none", "zlib"])
@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.97])
def test_truncated_tiff(
    tmp_path: Path, registry: ComponentRegistry, compression: str, fraction: float
) -> None:
    data = random_image((6, 300, 300))
    whole = write_image(
        tmp_path / "whole.ome.tif", data, axes="ZYX", compression=compression, registry=registry
    )
    content = whole.read_bytes()
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(content[: int(len(content) * fraction)])
    with pytest.raises(UserError, match=r"cut\.ome\.tif.*truncated"):
        open_image(cut, registry=registry).read()


def test_corrupt_tiff_data_fails_on_read_naming_the_file(
    tmp_path: Path, registry: ComponentRegistry
) -> None:
    path = write_image(
        tmp_path / "c.tif",
        random_image((300, 300)),
        axes="YX",
        compression="zlib",
        registry=registry,
    )
    content = bytearray(path.read_bytes())
    content[400:4000] = bytes(3600)  # zero the start of the first tile's compressed stream
    path.write_bytes(bytes(content))
    image = open_image(path, registry=registry)
    with pytest.raises(UserError, match=r"c\.tif.*corrupt"):
        image.read()
    image.close()


def test_not_a_tiff(tmp_path: Path, registry: ComponentRegistry) -> None:
    (tmp_path / "fake.tif").write_text("hello")
    with pytest.raises(UserError, match=r"fake\.tif: not a readable TIFF"):
        open_image(tmp_path / "fake.tif", registry=registry)


def test_not_a_zarr(tmp_path: Path, registry: ComponentRegistry) -> None:
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(UserError, match=r"empty\.zarr: not a zarr"):
        open_image(tmp_path / "empty.zarr", registry=registry)


def test_unsupported_dtype(tmp_path: Path, registry: ComponentRegistry) -> None:
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((8, 8), np.complex64))
    with pytest.raises(UserError, match=r"c\.tif: pixel type complex64 is not supported"):
        open_image(tmp_path / "c.tif", registry=registry)
    array = zarr.create_array(tmp_path / "c.zarr", shape=(8, 8), dtype="complex128")
    assert array.shape == (8, 8)
    with pytest.raises(UserError, match=r"c\.zarr: pixel type complex128"):
        open_image(tmp_path / "c.zarr", registry=registry)
    with pytest.raises(UserError, match="pixel type complex64"):
        write_image(
            tmp_path / "w.tif", np.zeros((8, 8), np.complex64), axes="YX", registry=registry
        )


def test_invalid_reader_options(tmp_path: Path, registry: ComponentRegistry) -> None:
    path = write_image(tmp_path / "a.tif", random_image((8, 8)), axes="YX", registry=registry)
    with pytest.raises(UserError, match="invalid options") as info:
        open_image(path, level=-1, registry=registry)
    assert "level" in str(info.value)
    with pytest.raises(UserError, match="level 2 requested but the file has 1"):
        open_image(path, level=2, registry=registry)
