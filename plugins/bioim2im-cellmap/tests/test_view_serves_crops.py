"""`bioim2im cellmap view`: raw data and a crop's classes served by neuroglancer's local server
(over localhost), each layer with its own voxel size and its offset in voxels, the data read
back over HTTP equal to the stores'; the URL is printed."""

from __future__ import annotations

import io
import json
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("neuroglancer")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def test_view_serves_raw_and_crop_layers_over_localhost(cellmap_root: Path):
    import neuroglancer

    from bioim2im_cellmap.api import view

    store = cellmap_root / "data" / "jrc_beta" / "jrc_beta.zarr" / "recon-1"
    raw = store / "em" / "fibsem-uint8"
    crop = store / "labels" / "groundtruth" / "crop3"
    result = view(raw=str(raw), labels=[str(crop)], wait=False)
    try:
        assert result.url.startswith("http://127.0.0.1:")
        assert result.layers == ["fibsem-uint8", "crop3/er", "crop3/nuc"]
        page = _get(result.url)
        assert b"neuroglancer" in page
        viewer = result.shown.viewer
        state = viewer.state.to_json()
        kinds = {layer["name"]: layer["type"] for layer in state["layers"]}
        assert kinds == {
            "fibsem-uint8": "image",
            "crop3/er": "segmentation",
            "crop3/nuc": "segmentation",
        }
        server = neuroglancer.server.get_server_url()
        for layer in state["layers"]:
            key = layer["source"][0]["url"].removeprefix("python://volume/")
            info = json.loads(_get(f"{server}/neuroglancer/info/{key}"))
            level = result.shown.layers[layer["name"]]
            assert info["shape"] == list(level.shape)
            assert [v[0] * 1e9 for v in info["coordinateSpace"].values()] == pytest.approx(
                list(level.scale)
            )
            offset = np.asarray(level.translation) / np.asarray(level.scale) - 0.5
            assert [float(v) for v in info["voxelOffset"]] == pytest.approx(offset.tolist())
            data = _get(f"{server}/neuroglancer/npz/{key}/1,1,1/0,0,0/3,4,5")
            served = np.load(io.BytesIO(zlib.decompress(data)))
            np.testing.assert_array_equal(
                served, level.read([slice(0, 3), slice(0, 4), slice(0, 5)])
            )
        # crop3 starts at (96, 48, 64) nm in 8 nm voxels; the raw at 0 in 6 x 4 x 4 nm voxels.
        assert result.shown.layers["crop3/nuc"].scale == (8.0, 8.0, 8.0)
        info = json.loads(
            _get(f"{server}/neuroglancer/info/" + state["layers"][2]["source"][0]["url"][16:])
        )
        assert [float(v) for v in info["voxelOffset"]] == [12.0, 6.0, 8.0]
    finally:
        neuroglancer.stop()


def test_view_of_nothing_or_a_bad_path_is_one_message(tmp_path: Path, cli):
    result = cli("cellmap", "view")
    assert result.code == 2 and "nothing to show" in result.err
    result = cli("cellmap", "view", "--labels", tmp_path / "missing.zarr")
    assert result.code == 2 and result.err.startswith("error:") and "Traceback" not in result.err
