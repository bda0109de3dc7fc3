"""CellMap stores read lazily over HTTP and S3 from real servers on localhost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from stores import PRESETS, S3, datasplit_text

from bioim2im.data.loader import make_loader
from bioim2im.errors import UserError
from bioim2im.io.remote import open_node
from bioim2im_cellmap.crops import open_crops
from bioim2im_cellmap.datasplit import make_datasplit, read_datasplit
from bioim2im_cellmap.patches import CellMapPatches

CLASSES = ["mito", "nuc", "er"]
USAGES = {1: "train", 2: "train", 3: "train"}


def split_at(root: str, folder: Path) -> Path:
    """The synthetic datasplit with its stores under ``root`` (a URL or a folder)."""
    text = datasplit_text(Path("/ROOT/data"), USAGES).replace("/ROOT", root)
    path = folder / "datasplit.csv"
    path.write_text(text)
    return path


def samples(split: Path, indices=range(6)) -> list[dict[str, np.ndarray]]:
    opened = open_crops(
        read_datasplit(split), CLASSES, input_scale=(8, 8, 8), target_scale=(8, 8, 8)
    )
    assert not opened.problems, opened.problems
    dataset = CellMapPatches(
        opened.crops, classes=CLASSES, head="seg", patch_size=[16, 16, 16], input_scale=[8, 8, 8]
    )
    return [dataset.sample(i) for i in indices]


def assert_same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


@pytest.fixture(scope="module")
def local(
    cellmap_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, np.ndarray]]:
    return samples(split_at(str(cellmap_root), tmp_path_factory.mktemp("local")))


def test_http_store_gives_the_same_patches(http_root: str, local, tmp_path: Path):
    split = split_at(http_root, tmp_path)
    assert read_datasplit(split)[0].raw.startswith("http://127.0.0.1:")
    assert_same(samples(split), local)


def test_s3_store_gives_the_same_patches_anonymously(s3: S3, local, tmp_path: Path):
    split = split_at(f"s3://{s3.bucket}", tmp_path)
    assert_same(samples(split), local)


def test_s3_patches_through_loader_workers(s3: S3, local, tmp_path: Path):
    opened = open_crops(
        read_datasplit(split_at(f"s3://{s3.bucket}", tmp_path)),
        CLASSES,
        input_scale=(8, 8, 8),
        target_scale=(8, 8, 8),
    )
    dataset = CellMapPatches(
        opened.crops, classes=CLASSES, head="seg", patch_size=[16, 16, 16], input_scale=[8, 8, 8]
    )
    batches = iter(make_loader(dataset, batch_size=3, num_workers=2))
    first, second = next(batches), next(batches)
    for key in local[0]:
        stacked = torch.cat([first[key], second[key]])
        np.testing.assert_array_equal(stacked.numpy(), np.stack([s[key] for s in local]))


def test_datasplit_from_an_s3_search_path(s3: S3, cli, tmp_path: Path):
    pattern = (
        f"s3://{s3.bucket}/data/{{dataset}}/{{dataset}}.zarr/recon-1/labels/groundtruth/{{crop}}"
    )
    found = make_datasplit(pattern, ["nuc", "er"], val_fraction=0.0)
    assert [(r.crop_store, r.name, r.classes) for r in found.rows] == [
        (f"s3://{s3.bucket}/data/jrc_alpha/jrc_alpha.zarr", "crop1", ("nuc", "er")),
        (f"s3://{s3.bucket}/data/jrc_beta/jrc_beta.zarr", "crop3", ("nuc", "er")),
        (f"s3://{s3.bucket}/data/jrc_beta/jrc_beta.zarr", "crop4", ("er",)),
    ]
    assert (
        found.rows[0].raw
        == f"s3://{s3.bucket}/data/jrc_alpha/jrc_alpha.zarr/recon-1/em/fibsem-uint8"
    )
    web = cli(
        "cellmap",
        "datasplit",
        "http://127.0.0.1:9/{dataset}/{crop}",
        "-c",
        "er",
        "--raw",
        "x/{dataset}",
        "--dry-run",
    )
    assert web.code == 2 and "a web server cannot be listed" in web.err


def test_private_bucket_needs_credentials(
    s3: S3, cellmap_root: Path, monkeypatch: pytest.MonkeyPatch
):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id="a",
        aws_secret_access_key="b",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="cellmap-private")
    client.put_object(
        Bucket="cellmap-private", Key="x.zarr/.zgroup", Body=json.dumps({"zarr_format": 2})
    )
    with pytest.raises(UserError, match="access denied: the store is not public"):
        open_node("s3://cellmap-private/x.zarr")
    # The usual environment variables give access.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    assert open_node("s3://cellmap-private/x.zarr") is not None


def test_unreachable_stores_are_one_clear_error(http_root: str, s3: S3, tmp_path: Path, cli):
    presets = PRESETS
    cases = {
        "http://127.0.0.1:9": "the server cannot be reached",
        f"{http_root}/nowhere": "nothing is there",
        f"s3://{s3.bucket}/nowhere": "nothing is there",
    }
    for root, message in cases.items():
        split = split_at(root, tmp_path)
        result = cli(
            "check",
            presets / "cellmap-3d.toml",
            "--data",
            "--set",
            f"data.path={split}",
            "--set",
            'data.layout.classes=["mito","nuc","er"]',
        )
        assert result.code == 2, (root, result.err)
        assert message in result.err and "cannot read" in result.err, (root, result.err)
        assert "Traceback" not in result.err
