"""`cellmap predict --crops` applies the head's postprocess chain (its threshold, then size
filters, watershed, ...) to each class on its crop's grid, as `cellmap process` does to saved
predictions: predicting with a chain gives what predicting and then processing gives, and the
steps applied are recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from stores import manifest_text
from test_predicted_crops_output import RAW, ROWS, model  # noqa: F401  (the trained run)

SIZE_FILTER = (
    'model.heads.seg.postprocess=[{name="sigmoid"}, {name="threshold", value=0.5}, '
    '{name="size_filter", min_size=3, max_size=40}]'
)


def test_predict_with_a_size_filter_equals_predict_then_process(
    model: Path,  # noqa: F811
    cellmap_root: Path,
    tmp_path: Path,
    cli,
):
    manifest = tmp_path / "test_crop_manifest.csv"
    manifest.write_text(manifest_text(ROWS))
    raw = RAW.format(root=cellmap_root)
    plain, chained, processed = (tmp_path / f"{n}.zarr" for n in ("plain", "chained", "processed"))
    command = ("cellmap", "predict", model, "--crops", manifest, "--raw", raw)
    assert cli(*command, "-o", plain).code == 0
    result = cli(*command, "-o", chained, "--set", SIZE_FILTER)
    assert result.code == 0, result.err
    assert "not applied" not in result.out + result.err
    done = cli("cellmap", "process", model, "-i", plain, "-o", processed, "--set", SIZE_FILTER)
    assert done.code == 0, done.err

    before, after, expected = (zarr.open_group(p, mode="r") for p in (plain, chained, processed))
    changed = False
    for crop, _, name, *_ in ROWS:
        where = f"crop{crop}/{name}"
        np.testing.assert_array_equal(after[where][...], expected[where][...])
        assert after[where].dtype == expected[where].dtype
        assert dict(after[where].attrs) == dict(before[where].attrs)
        changed |= not np.array_equal(after[where][...], before[where][...])
    assert changed, "the size filter changed nothing: the test shows nothing"
    applied = after.attrs["bioim2im"]["applied"]
    assert [step["name"] for step in applied] == ["sigmoid", "threshold", "size_filter"]
    # Nothing is left to do on it: `process` says so instead of filtering twice.
    again = cli("cellmap", "process", model, "-i", chained, "-o", tmp_path / "x.zarr",
                "--set", SIZE_FILTER)  # fmt: skip
    assert again.code == 2 and "nothing to do" in again.err


def test_the_chains_threshold_is_the_one_applied(
    model: Path,  # noqa: F811
    cellmap_root: Path,
    tmp_path: Path,
    cli,
):
    manifest = tmp_path / "test_crop_manifest.csv"
    manifest.write_text(manifest_text(ROWS))
    raw = RAW.format(root=cellmap_root)
    command = ("cellmap", "predict", model, "--crops", manifest, "--raw", raw, "--only", "21")
    counts = {}
    for value in (0.05, 0.5, 0.95):
        out = tmp_path / f"t{value}.zarr"
        chain = (
            f'model.heads.seg.postprocess=[{{name="sigmoid"}}, {{name="threshold", value={value}}}]'
        )
        result = cli(*command, "-o", out, "--set", chain)
        assert result.code == 0 and "not applied" not in result.out + result.err, result.err
        group = zarr.open_group(out, mode="r")
        assert group.attrs["bioim2im"]["applied"][1] == {"name": "threshold", "value": value}
        counts[value] = int((group["crop21/er"][...] > 0).sum())
    assert counts[0.05] >= counts[0.5] >= counts[0.95] and counts[0.05] > counts[0.95], counts


def test_a_chain_that_does_not_start_with_sigmoid_and_threshold_is_named_as_not_applied(
    model: Path,  # noqa: F811
    cellmap_root: Path,
    tmp_path: Path,
    cli,
):
    manifest = tmp_path / "test_crop_manifest.csv"
    manifest.write_text(manifest_text(ROWS))
    result = cli(
        "cellmap", "predict", model, "--crops", manifest, "--raw", RAW.format(root=cellmap_root),
        "-o", tmp_path / "p.zarr", "--only", "22", "--set",
        'model.heads.seg.postprocess=[{name="sigmoid"}]',
    )  # fmt: skip
    assert result.code == 0, result.err
    said = " ".join((result.out + result.err).split())
    assert "its postprocess chain (sigmoid) is not applied to the crops" in said
