"""`bioim2im cellmap process`: a head's postprocessing chain over `cellmap predict`'s crop
outputs, block by block, skipping the steps they already went through; what it writes `pack`
takes; a chain that does not start with those steps is one message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from stores import manifest_text
from test_predicted_crops_output import RAW, ROWS, model  # noqa: F401  (the trained run)

CHAIN = (
    'model.heads.seg.postprocess=[{name="sigmoid"}, {name="threshold", value=0.5}, '
    '{name="remove_small_objects", min_size=6}]'
)


@pytest.fixture
def predicted(model: Path, cellmap_root: Path, tmp_path: Path, cli) -> tuple[Path, Path]:  # noqa: F811
    manifest = tmp_path / "test_crop_manifest.csv"
    manifest.write_text(manifest_text(ROWS))
    output = tmp_path / "predictions.zarr"
    result = cli(
        "cellmap", "predict", model, "--crops", manifest, "--raw", RAW.format(root=cellmap_root),
        "-o", output,
    )  # fmt: skip
    assert result.code == 0, result.err
    return output, manifest


def _expected(values: np.ndarray) -> np.ndarray:
    from bioim2im.builtins.postprocess import remove_small_objects

    step = remove_small_objects(min_size=6)
    return np.asarray(step(values[None]))[0]


def test_process_runs_the_rest_of_the_chain_block_by_block(
    model: Path,  # noqa: F811
    predicted: tuple[Path, Path],
    tmp_path: Path,
    cli,
):
    source, manifest = predicted
    outputs = {}
    for block in (3, 64):
        out = tmp_path / f"processed-{block}.zarr"
        result = cli(
            "cellmap", "process", model, "-i", source, "-o", out, "--set", CHAIN,
            "--block", str(block),
        )  # fmt: skip
        assert result.code == 0, result.err
        assert "through [remove_small_objects]" in " ".join(result.err.split())
        outputs[block] = zarr.open_group(out, mode="r")
    before = zarr.open_group(source, mode="r")
    for crop, _, name, *_ in ROWS:
        where = f"crop{crop}/{name}"
        original = before[where]
        for group in outputs.values():
            assert dict(group[where].attrs) == dict(original.attrs)
        small, whole = outputs[3][where][...], outputs[64][where][...]
        np.testing.assert_array_equal(whole, _expected(original[...]))
        np.testing.assert_array_equal(small > 0, whole > 0)
    packed = cli(
        "cellmap", "pack", tmp_path / "processed-3.zarr", "--crops", manifest, "-o",
        tmp_path / "s.zip",
    )  # fmt: skip
    assert packed.code == 0, packed.err


def test_a_chain_that_does_not_start_with_what_was_applied_is_refused(
    model: Path,  # noqa: F811
    predicted: tuple[Path, Path],
    tmp_path: Path,
    cli,
):
    source, _ = predicted
    out = tmp_path / "p.zarr"
    other = 'model.heads.seg.postprocess=[{name="sigmoid"}, {name="threshold", value=0.7}]'
    result = cli("cellmap", "process", model, "-i", source, "-o", out, "--set", other)
    assert result.code == 2 and result.err.startswith("error:") and "went through" in result.err
    done = cli("cellmap", "process", model, "-i", source, "-o", out)
    assert done.code == 2 and "nothing to do" in done.err
    assert not out.exists()


def test_an_unreadable_prediction_is_one_message_and_nothing_is_written(
    model: Path,  # noqa: F811
    predicted: tuple[Path, Path],
    tmp_path: Path,
    cli,
):
    source, _ = predicted
    chunk = next(p for p in (source / "crop21" / "er").iterdir() if not p.name.startswith("."))
    chunk.write_bytes(b"not a chunk")
    out = tmp_path / "p.zarr"
    result = cli("cellmap", "process", model, "-i", source, "-o", out, "--set", CHAIN)
    assert result.code == 2 and result.err.startswith("error:"), result.err
    assert "crop21/er: cannot be processed" in result.err and "Traceback" not in result.err
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
