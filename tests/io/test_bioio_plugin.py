"""plugins/bioim2im-bioio, installed for real: files of bioio's format plugins read lazily,
with their axes and physical voxel sizes, wherever bioim2im reads images. Tested on files the
format libraries write: OME-TIFF (bioio-ome-tiff) and Zeiss CZI (pylibCZIrw, bioio-czi's
library)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.plugin_helpers import install_plugin, registry_with

from bioim2im.io import open_image

pytest.importorskip("bioio_czi", reason="the dev extra installs bioio-czi")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin("bioim2im-bioio", tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def registry(site: Path) -> Iterator[Any]:
    with registry_with(site) as built:
        yield built


def _czi(path: Path, channels: int = 2, planes: int = 3) -> np.ndarray:
    """A CZI file of (C, Z, 40, 50) uint16, 1 x 0.2 x 0.2 micrometre voxels."""
    from pylibCZIrw import czi

    data = np.random.default_rng(0).integers(0, 4000, (channels, planes, 40, 50), np.uint16)
    with czi.create_czi(str(path), exist_ok=True) as file:
        for z in range(planes):
            for c in range(channels):
                file.write(data=data[c, z], plane={"C": c, "Z": z, "T": 0})
        file.write_metadata(scale_x=0.2e-6, scale_y=0.2e-6, scale_z=1e-6)
    return data


def test_czi_files_are_read_lazily_by_suffix_with_voxel_sizes(registry, tmp_path: Path) -> None:
    data = _czi(tmp_path / "cells.czi")
    image = open_image(tmp_path / "cells.czi", registry=registry)
    assert type(image).__name__ == "BioioImage"
    assert (image.axes, image.shape, image.dtype) == ("CZYX", (2, 3, 40, 50), np.uint16)
    assert image.voxel_size == pytest.approx((1.0, 0.2, 0.2))
    region = (slice(1, 2), slice(0, 3), slice(5, 17), slice(30, 50))
    np.testing.assert_array_equal(image.read(region), data[region])
    np.testing.assert_array_equal(image.read(), data)
    # Data-loading workers get it pickled: each reopens the file.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(image)).read(region), data[region])


def test_ome_tiff_scenes_are_samples_with_micrometre_voxels(registry, tmp_path: Path) -> None:
    from bioio_base.types import PhysicalPixelSizes
    from bioio_ome_tiff.writers import OmeTiffWriter

    scenes = [np.arange(2 * 16 * 20, dtype=np.uint16).reshape(2, 16, 20) + 1000 * s for s in (0, 1)]
    path = tmp_path / "two.ome.tiff"
    OmeTiffWriter.save(scenes, path, dim_order=["ZYX", "ZYX"],
                       physical_pixel_sizes=[PhysicalPixelSizes(2.0, 0.5, 0.5)] * 2)  # fmt: skip
    # bioim2im reads OME-TIFF itself; the bioio reader takes it when called by name.
    image = registry.get("reader", "bioio").load()(path)
    assert (image.axes, image.shape) == ("SZYX", (2, 2, 16, 20))
    assert image.voxel_size == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(image.read((slice(1, 2), slice(None), slice(3, 5), slice(None))),
                                  scenes[1][None, :, 3:5])  # fmt: skip
    missing = registry.get("reader", "bioio").load()
    with pytest.raises(Exception, match="resolution level 3 does not exist"):
        missing(path, level=3)


def test_czi_training_data_passes_check_data(registry, tmp_path: Path, cli, monkeypatch) -> None:
    from bioim2im.io.tiff import write_tiff
    from bioim2im.plugin import manager

    monkeypatch.setattr(manager, "get_registry", lambda: registry)
    for i in range(2):
        (tmp_path / "data" / "IM").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "GT").mkdir(exist_ok=True)
        _czi(tmp_path / "data" / "IM" / f"img_{i}.czi", channels=1, planes=1)
        write_tiff(
            tmp_path / "data" / "GT" / f"img_{i}.tif", np.zeros((40, 50), np.uint8), axes="YX"
        )
    result = cli("check", "segmentation-2d", "--data", "--set", f"data.path={tmp_path / 'data'}",
                 "--set", "data.patch_size=[32, 32]")  # fmt: skip
    assert result.code == 0, result.err
    assert "dataset is usable: 1 train, 1 val pair(s)" in result.err
    assert "40x50 (YX)" in result.err and "uint16" in result.err  # the CZI inputs


def test_list_plugins_shows_the_suffixes_of_installed_bioio_plugins(site: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bioim2im", "list-plugins", "--kind", "reader", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["bioio"]["package"] == "bioim2im-bioio"


def test_a_file_no_bioio_plugin_reads_is_one_message(registry, tmp_path: Path) -> None:
    from bioim2im.errors import UserError

    bogus = tmp_path / "broken.czi"
    bogus.write_bytes(b"not a czi file")
    with pytest.raises(UserError, match=r"broken\.czi"):
        open_image(bogus, registry=registry).read()
