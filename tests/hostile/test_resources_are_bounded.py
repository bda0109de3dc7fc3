"""Resources a preset or a file asks for are bounded by what can possibly be done: worker
processes by the CPU cores, batches by what any machine holds, images by what can be read.
Each refusal is one message and exit 2, given up front instead of after minutes of work or
an exhausted memory; prediction of a large (but real) image still goes ahead block by block."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import (
    Limits,
    assert_ok,
    assert_user_error,
    ended_cleanly,
    invoke,
    run,
    start,
    wait_until,
)

from bioim2im.io.omezarr import write_ome_zarr


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("data.num_workers=1000000", "data.num_workers"),
        ("data.batch_size=1000000000", "data.batch_size"),
        ("predict.batch_size=1000000000", "predict.batch_size"),
        ("data.patch_size=[100000, 100000]", "data.batch_size x data.patch_size"),
        ("data.batch_size=4096", "voxels per batch"),
    ],
)
def test_check_bounds_workers_and_batches(
    tiny_preset: Callable[..., Path], setting: str, named: str
) -> None:
    overrides = ["--set", setting]
    if setting == "data.batch_size=4096":
        overrides += ["--set", "data.patch_size=[1024, 1024]"]
    assert_user_error(invoke("check", tiny_preset(), *overrides), named)


def test_workers_beyond_the_cores_are_not_started(
    tiny_preset: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bioim2im.data.loader as loader

    started: list[int] = []
    real = loader.DataLoader

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(kwargs["num_workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(loader, "DataLoader", recording)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    result = invoke(
        "train",
        tiny_preset(),
        "--run-dir",
        tmp_path / "run",
        "--set",
        "data.num_workers=24",
        "--set",
        "train.steps=2",
    )
    assert_ok(result)
    assert started == [1]
    said = (result.out + result.err).count("data.num_workers = 24")
    assert said == 1, result


def _memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _zarr_claiming(path: Path, shape: list[int], is_label: bool = False) -> Path:
    write_ome_zarr(
        path, np.zeros((64, 64), np.uint8 if is_label else np.float32), axes="YX", is_label=is_label
    )
    meta = path / "0" / ".zarray"
    document = json.loads(meta.read_text())
    document["shape"], document["chunks"] = shape, [256, 256]
    meta.write_text(json.dumps(document))
    return path


def _tiff_claiming(path: Path, side: int) -> Path:
    """A tiled BigTIFF whose header claims ``side`` x ``side`` pixels (one real tile)."""
    import struct

    import tifffile

    tifffile.imwrite(
        path, np.zeros((256, 256), np.uint8), bigtiff=True, tile=(256, 256), compression="zlib"
    )
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = [tif.pages[0].tags[code] for code in (256, 257)]  # ImageWidth, ImageLength
        for tag in tags:
            data[tag.offset + 2 : tag.offset + 4] = struct.pack("<H", 16)  # LONG8
            data[tag.valueoffset : tag.valueoffset + 8] = struct.pack("<Q", side)
    path.write_bytes(bytes(data))
    return path


def _cli(*args: str | Path, cwd: Path) -> object:
    return run(*args, cwd=cwd, limits=Limits(extra_memory=2 << 30), timeout=60)


@pytest.mark.parametrize("kind", ["zarr 2^40", "tiff 2^31"])
def test_an_absurd_image_header_is_refused_up_front(
    trained_run: Path, nuclei_data: Path, tmp_path: Path, kind: str
) -> None:
    if kind.startswith("zarr"):
        image = _zarr_claiming(tmp_path / "cells.ome.zarr", [2**40, 2**40])
    else:
        image = _tiff_claiming(tmp_path / "cells.tif", 2**31)
    truth = nuclei_data / "GT" / "img_000.tif"
    out = tmp_path / "out"
    assert_user_error(
        _cli("predict", trained_run, "-i", image, "-o", out, cwd=tmp_path), image.name
    )  # type: ignore[arg-type]
    assert not out.exists()
    evaluated = _cli("evaluate", "-p", image, "-t", truth, cwd=tmp_path)
    assert_user_error(evaluated, image.name)  # type: ignore[arg-type]


@pytest.mark.skipif(_memory() >= 1 << 42, reason="the machine holds a 4 TiB image")
def test_images_read_whole_beyond_the_memory_are_refused_up_front(
    tiny_preset: Callable[..., Path], tmp_path: Path
) -> None:
    """2^20 x 2^20 voxels (4 TiB as float32): training reads each label whole, evaluate each
    image; both say so at once instead of scanning for minutes or running out of memory."""
    data = tmp_path / "data"
    for name in ("a", "b"):
        _zarr_claiming(data / "IM" / f"{name}.ome.zarr", [2**20, 2**20])
        _zarr_claiming(data / "GT" / f"{name}.ome.zarr", [2**20, 2**20], is_label=True)
    checked = _cli("check", "--data", tiny_preset(data=data), cwd=tmp_path)
    assert_user_error(checked, "GT/a.ome.zarr", "memory")  # type: ignore[arg-type]
    truth = data / "GT" / "a.ome.zarr"
    evaluated = _cli("evaluate", "-p", truth, "-t", data / "GT" / "b.ome.zarr", cwd=tmp_path)
    assert_user_error(evaluated, "a.ome.zarr", "memory")  # type: ignore[arg-type]


def test_a_large_image_is_still_predicted_block_by_block(trained_run: Path, tmp_path: Path) -> None:
    """Nothing refuses an image larger than the memory that prediction can stream: blocks of a
    2^15 x 2^15 image (4 GiB of float32) are predicted and logged as written."""
    image = _zarr_claiming(tmp_path / "cells.ome.zarr", [2**15, 2**15])
    out = tmp_path / "out"
    process = start(
        "predict",
        trained_run,
        "-i",
        image,
        "-o",
        out,
        "--set",
        "predict.block_size=[256, 256]",
        cwd=tmp_path,
    )

    def written() -> bool:
        return any(p.stat().st_size for p in out.glob(".*partial/written-*"))

    try:
        wait_until(written, process, timeout=60, what="the first blocks")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


# ---- sizes beyond the machine ------------------------------------------------------------
@pytest.mark.parametrize(
    "override",
    [
        "data.patch_size=[100000, 100000]",  # padded images of 37 GiB
        "model.backbone.channels=[100000, 100000]",  # a 360 GB network
        "model.features=1000000000",
        "model.heads.seg.out_channels=100000000",
    ],
)
def test_training_sizes_beyond_memory_end_in_one_message(
    override: str, tiny_preset, trained_run: Path, tmp_path: Path
) -> None:
    """A size that cannot fit is refused up front (exit 2) or fails as out of memory (exit 1);
    never a traceback. (The process gets 2 GiB more than the test process holds.)"""
    result = run(
        "train",
        tiny_preset(),
        "--run-dir",
        tmp_path / "run",
        "--set",
        override,
        "--set",
        "predict.roi_size=[32, 32]",
        cwd=tmp_path,
        limits=Limits(extra_memory=2 << 30),
        timeout=120,
    )
    assert ended_cleanly(result, codes=(1, 2)), result


def test_an_epoch_of_a_trillion_patches_ends_in_one_message(
    tiny_preset, trained_run: Path, tmp_path: Path
) -> None:
    result = run(
        "train",
        tiny_preset(),
        "--run-dir",
        tmp_path / "run",
        "--set",
        "data.patches_per_image=1000000000000",
        "--set",
        "train.epochs=1",
        cwd=tmp_path,
        limits=Limits(extra_memory=2 << 30),
        timeout=120,
    )
    assert ended_cleanly(result, codes=(0, 1, 2)) and result.code != 0, result
