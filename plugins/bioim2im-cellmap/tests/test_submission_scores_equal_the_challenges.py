"""``bioim2im cellmap evaluate`` gives the challenge's own overall, instance and semantic scores
(the leaderboard's number) on synthetic stores that exercise every rule the two could differ by.

The expected numbers are facts: the official evaluator (janelia-cellmap/
cellmap-segmentation-challenge at commit 6b9ad68, ``evaluate.score_submission``, run offline in
its own environment with zarr 2 and the truth arrays' attributes as its test-crop manifest) was
run on copies of exactly the stores :func:`build` writes, and its results are copied here. No
code of the challenge is used.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from bioim2im_cellmap.evaluation import evaluate_submission


def _array(path: Path, values: np.ndarray, **attrs: object) -> None:
    stored = zarr.create_array(
        store=str(path), shape=values.shape, dtype=values.dtype, chunks=values.shape,
        zarr_format=2, overwrite=True,
    )  # fmt: skip
    stored[...] = values
    stored.attrs.update(attrs)


def _ngff(path: Path, values: np.ndarray, scale: list[float], translation: list[float]) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    _array(path / "s0", values)
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
            "datasets": [
                {
                    "path": "s0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": scale},
                        {"type": "translation", "translation": translation},
                    ],
                }
            ],
        }
    ]


def build(root: Path) -> tuple[Path, Path]:
    """The truth (``root/truth``) and the submission folder (``root/submission.zarr``), neither
    with a root ``.zgroup``; nor has its crop 2."""
    truth, sub = root / "truth", root / "submission.zarr"
    # crop1: 4 nm voxels whose centres sit at 2 nm + 4k (half-voxel translation, as the
    # challenge's manifest has them).
    vs1, tr1, shape1 = [4.0] * 3, [2.0] * 3, (8, 16, 16)
    mito = np.zeros(shape1, np.uint16)
    mito[1:4, 1:5, 1:5], mito[4:7, 8:12, 2:6], mito[2:5, 10:14, 10:14] = 1, 2, 5
    er = np.zeros(shape1, np.uint8)
    er[:, 6:10, :] = 1
    er[3:5, :, 12:] = 1
    nuc = np.zeros(shape1, np.uint16)
    nuc[2:7, 2:12, 7:15] = 1
    mask = np.ones(shape1, np.uint8)
    mask[:, :, 14:] = 0
    for name, values in (("mito", mito), ("er", er), ("nuc", nuc), ("mito_mask", mask)):
        _array(truth / "crop1" / name, values, voxel_size=vs1, translation=tr1)
    # Submitted mito at 2 nm (downsampled by nearest), first voxel centre 3 nm off the crop's
    # and 1 nm off its own grid; plus a stray object.
    fine = np.repeat(np.repeat(np.repeat(mito, 2, 0), 2, 1), 2, 2)
    fine = np.roll(fine, (1, 2, -1), axis=(0, 1, 2))
    fine[0:2, 30:32, 0:3] = 9
    _array(sub / "crop1" / "mito", fine, voxel_size=[2.0] * 3, translation=[5.0, 3.0, 1.0])
    # Submitted er: probabilities at 8 nm (upsampled linearly, then > 0.5), off the grid.
    coarse = np.zeros((4, 8, 8), np.float32)
    coarse[:, 3:5, :] = 0.9
    coarse[1:3, :, 6:] = 0.6
    coarse[0, 0, 0] = 0.55
    _array(sub / "crop1" / "er", coarse, voxel_size=[8.0] * 3, translation=[6.0, 1.0, -3.0])
    # Submitted nuc: float labels with a voxel size and no translation (first voxel on the
    # crop's), values not whole, a NaN.
    fnuc = np.zeros(shape1, np.float32)
    fnuc[2:7, 2:12, 7:12] = 1.0
    fnuc[2:7, 2:12, 12:15] = 1.5
    fnuc[0, 0, 0] = np.nan
    _array(sub / "crop1" / "nuc", fnuc, voxel_size=vs1)
    # crop2: 2 nm, true ids 1 and 100 (the cutoff counts 100), er submitted as an OME-NGFF
    # group (not read: missing), a class the truth lacks (ignored).
    vs2, tr2, shape2 = [2.0] * 3, [0.0] * 3, (6, 12, 12)
    mito2 = np.zeros(shape2, np.uint16)
    mito2[1:3, 1:4, 1:4], mito2[3:5, 7:10, 7:10] = 1, 100
    er2 = np.zeros(shape2, np.uint8)
    er2[:3] = 1
    _array(truth / "crop2" / "mito", mito2, voxel_size=vs2, translation=tr2)
    _array(truth / "crop2" / "er", er2, voxel_size=vs2, translation=tr2)
    dots = np.zeros(shape2, np.uint16)
    dots[1:3, 1:4, 1:4] = 4
    dots[0, ::3, ::3] = 7
    _array(sub / "crop2" / "mito", dots, voxel_size=vs2, translation=[1.0, -2.0, 0.0])
    _ngff(sub / "crop2" / "er", er2, vs2, tr2)
    _array(sub / "crop2" / "golgi", er2, voxel_size=vs2, translation=tr2)
    # crop3: not submitted at all.
    _array(truth / "crop3" / "mito", mito2, voxel_size=vs2, translation=tr2)
    _array(truth / "crop3" / "er", er2, voxel_size=vs2, translation=tr2)
    for stray in (truth / ".zgroup", sub / ".zgroup", sub / "crop2" / ".zgroup"):
        stray.unlink(missing_ok=True)
    return truth, sub


# The official evaluator's result on build()'s stores (instance classes: the challenge's list).
OFFICIAL = {
    "overall_score": 0.25716863419675684,
    "overall_instance_score": 0.6211465546461612,
    "overall_semantic_score": 0.10647359454855196,
}
OFFICIAL_LABELS: dict[str, dict[str, float]] = {
    "er": {"fn": 1836, "fp": 12, "iou": 0.21294718909710392, "tp": 500},
    "mito": {
        "combined_score": 0.5432642441378174,
        "f1": 0.3333333333333333,
        "fn": 3,
        "fp": 13,
        "normalized_hausdorff_distance": 0.885408116875902,
        "tp": 4,
    },
    "mito_mask": {"fn": 2048, "fp": 0, "iou": 0.0, "tp": 0},
    "nuc": {
        "combined_score": 0.6990288651545051,
        "f1": 0.5,
        "fn": 0,
        "fp": 2,
        "normalized_hausdorff_distance": 0.9772827086383907,
        "tp": 1,
    },
}
OFFICIAL_CROPS: dict[str, dict[str, dict[str, float]]] = {
    "crop1": {
        "er": {"fn": 108, "fp": 12, "num_voxels": 2048, "tp": 500},
        "mito": {
            "fn": 0,
            "fp": 1,
            "hausdorff_norm_sum": 3.938382422976286,
            "n_hausdorff": 4,
            "num_voxels": 2048,
            "tp": 3,
        },
        "mito_mask": {"fn": 2048, "fp": 0, "num_voxels": 2048, "tp": 0},
        "nuc": {
            "fn": 0,
            "fp": 2,
            "hausdorff_norm_sum": 2.931848125915172,
            "n_hausdorff": 3,
            "num_voxels": 2048,
            "tp": 1,
        },
    },
    "crop2": {
        "er": {"fn": 864, "fp": 0, "num_voxels": 864, "tp": 0},
        "mito": {
            "fn": 1,
            "fp": 12,
            "hausdorff_norm_sum": 13.769779914541752,
            "n_hausdorff": 14,
            "num_voxels": 864,
            "tp": 1,
        },
    },
    "crop3": {
        "er": {"fn": 864, "fp": 0, "num_voxels": 864, "tp": 0},
        "mito": {
            "fn": 2,
            "fp": 0,
            "hausdorff_norm_sum": 0.0,
            "n_hausdorff": 2,
            "num_voxels": 864,
            "tp": 0,
        },
    },
}


def _check(report: dict) -> None:
    for key, value in OFFICIAL.items():
        assert report[key] == pytest.approx(value, abs=1e-6), key
    for name, scores in OFFICIAL_LABELS.items():
        for key, value in scores.items():
            assert report["label_scores"][name][key] == pytest.approx(value, abs=1e-6), (name, key)
    assert set(report["label_scores"]) == set(OFFICIAL_LABELS)
    for crop, classes in OFFICIAL_CROPS.items():
        for name, counts in classes.items():
            for key, value in counts.items():
                assert report["crops"][crop][name][key] == pytest.approx(value, abs=1e-6), (
                    crop,
                    name,
                    key,
                )


def test_a_submission_folder_scores_as_the_challenge_scores_it(tmp_path: Path):
    truth, sub = build(tmp_path)
    result = evaluate_submission(sub, truth, json_path=tmp_path / "s.json")
    report = json.loads((tmp_path / "s.json").read_text())
    _check(report)
    assert report["alignment"] == "challenge"
    assert report["missing_crops"] == ["crop3"] and report["ignored"] == ["crop2/golgi"]
    assert len(report["unread"]) == 1 and report["unread"][0].startswith("crop2/er: a group")
    assert result.scores["overall_score"] == pytest.approx(OFFICIAL["overall_score"], abs=1e-6)


def test_the_layouts_the_challenge_reads(tmp_path: Path, cli):
    truth, sub = build(tmp_path)
    # zip -r submission.zip submission.zarr, as the challenge's documentation says.
    zipped = tmp_path / "submission.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        for path in sorted(sub.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(tmp_path).as_posix())
    # A folder holding that one zip.
    upload = tmp_path / "upload"
    upload.mkdir()
    shutil.copy(zipped, upload / "anything.zip")
    for source in (zipped, upload):
        out = tmp_path / f"{source.name}.json"
        result = cli("cellmap", "evaluate", "--pred", source, "--truth", truth, "--json", out)
        assert result.code == 0, result.err
        _check(json.loads(out.read_text()))
    # Nothing was written into the inputs.
    assert not (truth / ".zgroup").exists() and not (sub / ".zgroup").exists()
    shutil.copy(zipped, upload / "second.zip")
    result = cli("cellmap", "evaluate", "--pred", upload, "--truth", truth)
    assert result.code == 2 and result.err.count("error:") == 1 and "2 zip files" in result.err


def _small(root: Path, *, crop: str = "crop1", with_mask: bool = True) -> tuple[Path, Path]:
    """A truth crop with mito (ids 1, 2), er and optionally mito_mask, and a perfect
    submission of mito and er, at 2 nm with a 1 nm translation."""
    vs, tr, shape = [2.0] * 3, [1.0] * 3, (4, 8, 8)
    mito = np.zeros(shape, np.uint8)
    mito[1:3, 1:3, 1:3], mito[1:3, 5:7, 5:7] = 1, 2
    er = np.zeros(shape, np.uint8)
    er[:, :4, :] = 1
    truth, sub = root / "truth.zarr", root / "sub.zarr"
    for name, values in (("mito", mito), ("er", er)):
        _array(truth / "crop1" / name, values, voxel_size=vs, translation=tr)
        _array(sub / crop / name, values, voxel_size=vs, translation=tr)
    if with_mask:
        mask = np.ones(shape, np.uint8)
        mask[:, :, 6:] = 0
        _array(truth / "crop1" / "mito_mask", mask, voxel_size=vs, translation=tr)
    return truth, sub


def test_a_mask_array_in_the_truth_is_a_class_of_its_own(tmp_path: Path):
    truth, sub = _small(tmp_path)
    scores = evaluate_submission(sub, truth, instance_classes=["mito"]).scores
    assert scores["label_scores"]["mito_mask"] == {"iou": 0.0, "tp": 0, "fp": 0, "fn": 256}
    assert scores["overall_semantic_score"] == pytest.approx(0.5)
    assert scores["overall_score"] == pytest.approx(0.7071067811865476, abs=1e-12)
    # Submitted too, it is scored as a semantic class.
    _array(sub / "crop1" / "mito_mask", np.ones((4, 8, 8), np.uint8), voxel_size=[2.0] * 3,
           translation=[1.0] * 3)  # fmt: skip
    scores = evaluate_submission(sub, truth, instance_classes=["mito"]).scores
    assert scores["label_scores"]["mito_mask"] == {"iou": 0.75, "tp": 192, "fp": 64, "fn": 0}
    assert scores["label_scores"]["mito"]["combined_score"] == 1.0


def test_crops_named_by_their_number(tmp_path: Path):
    truth, sub = _small(tmp_path, crop="1", with_mask=False)
    scores = evaluate_submission(sub, truth, instance_classes=["mito"]).scores
    assert scores["overall_score"] == 1.0
    assert (sub / "1").is_dir() and not (sub / "crop1").exists()  # nothing renamed on disk


def test_physical_alignment_is_not_the_leaderboards_number(tmp_path: Path):
    truth, sub = build(tmp_path)
    physical = evaluate_submission(sub, truth, alignment="physical").to_json()
    assert physical["alignment"] == "physical"
    assert "mito_mask" not in physical["label_scores"]
    assert physical["overall_score"] != pytest.approx(OFFICIAL["overall_score"], abs=1e-3)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"voxel_size": [0, 0, 0]}, "every value must be positive"),
        ({"voxel_size": "abc"}, "'voxel_size' is not a list of numbers"),
        ({"voxel_size": [2.0]}, "'voxel_size' needs 3 finite numbers"),
        ({"voxel_size": [1e30] * 3}, "more than 4096 times the crop's"),
        (None, "unreadable data"),
    ],
)
def test_bad_submitted_arrays_are_refused_with_one_message(tmp_path: Path, cli, attrs, message):
    truth, sub = _small(tmp_path, with_mask=False)
    if attrs is None:
        (sub / "crop1" / "mito" / "0.0.0").write_bytes(b"not a chunk")
    else:
        _array(sub / "crop1" / "mito", np.ones((4, 8, 8), np.uint8), **attrs)
    result = cli("cellmap", "evaluate", "--pred", sub, "--truth", truth)
    assert result.code == 2, result.err
    assert result.err.startswith("error:") and result.err.count("\n") == 1 and message in result.err
    assert "Traceback" not in result.err and "crop1/mito" in result.err


def random_case(root: Path, seed: int) -> tuple[Path, Path]:
    """Two crops of random objects (mito) and masks (er) at 2, 4 or 8 nm, half-voxel
    translations; the submission at half, the same or twice the voxel size, a little larger or
    smaller than the crops, shifted by up to two voxels; er as float probabilities."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    truth, sub = root / "truth", root / "submission.zarr"
    for c in (1, 2):
        vs = [float(rng.choice([2, 4, 8]))] * 3
        shape = tuple(int(x) for x in rng.integers(8, 20, 3))
        tr = [float(v * (k + 0.5)) for v, k in zip(vs, rng.integers(0, 50, 3), strict=True)]
        mito, _ = ndimage.label(ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.52)
        er = (ndimage.gaussian_filter(rng.random(shape), 2) > 0.5).astype(np.uint8)
        _array(truth / f"crop{c}" / "mito", mito.astype(np.uint16), voxel_size=vs, translation=tr)
        _array(truth / f"crop{c}" / "er", er, voxel_size=vs, translation=tr)
        f = float(rng.choice([0.5, 1, 2]))
        sub_vs = [v * f for v in vs]
        sub_shape = tuple(max(1, round(s / f)) + int(rng.integers(-2, 3)) for s in shape)
        pred, _ = ndimage.label(ndimage.gaussian_filter(rng.random(sub_shape), 1.5 / f) > 0.52)
        prob = ndimage.gaussian_filter(rng.random(sub_shape), 2 / f).astype(np.float32)
        sub_tr = [t + float(rng.uniform(-2, 2) * v) for t, v in zip(tr, vs, strict=True)]
        _array(
            sub / f"crop{c}" / "mito", pred.astype(np.uint16), voxel_size=sub_vs, translation=sub_tr
        )
        _array(sub / f"crop{c}" / "er", prob, voxel_size=sub_vs, translation=sub_tr)
    return truth, sub


# The official evaluator's (overall, instance, semantic) scores of random_case(seed).
RANDOM_OFFICIAL = {
    0: (0.3601223127125485, 0.6213727769568714, 0.20871220131105941),
    1: (0.2396010412100911, 0.34669281212856934, 0.16558941212680825),
    2: (0.36600760379578456, 0.6456561055356866, 0.20748129675810473),
    3: (0.3490042778878732, 0.6026987649788917, 0.20209762000806777),
}


@pytest.mark.parametrize("seed", sorted(RANDOM_OFFICIAL))
def test_random_off_grid_submissions_score_as_the_challenge_scores_them(tmp_path: Path, seed):
    truth, sub = random_case(tmp_path, seed)
    scores = evaluate_submission(sub, truth).scores
    found = tuple(
        scores[k] for k in ("overall_score", "overall_instance_score", "overall_semantic_score")
    )
    assert found == pytest.approx(RANDOM_OFFICIAL[seed], abs=1e-6)
