"""`bioim2im cellmap evaluate --alignment physical` over a submission equals a straightforward
computation of the challenge's definitions (brute-force matching and distances, written out
below) on arrays placed where their voxels physically are."""

from __future__ import annotations

import itertools
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage
from stores import write_array, write_truth

from bioim2im_cellmap.evaluation import evaluate_submission

INSTANCE = {"mito", "nuc"}
S = 1_000_000  # the challenge's cost scale


# --- the definitions, written out ---------------------------------------------------------


def components(pred: np.ndarray) -> np.ndarray:
    """Connected components (26-connectivity), each label value on its own, numbered 1..n."""
    out = np.zeros(pred.shape, dtype=np.int64)
    for value in np.unique(pred[pred > 0]):
        labelled, _ = ndimage.label(pred == value, structure=np.ones((3,) * pred.ndim))
        out[labelled > 0] = labelled[labelled > 0] + out.max()
    return out


def hausdorff(a: np.ndarray, b: np.ndarray, voxel: np.ndarray) -> float:
    pa, pb = np.argwhere(a) * voxel, np.argwhere(b) * voxel
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return float(max(d.min(axis=1).max(), d.min(axis=0).max()))


def best_matching(
    weights: dict[tuple[int, int], float], n_true: int, n_pred: int
) -> list[tuple[int, int]]:
    """Every one-to-one matching of overlapping pairs, tried; the largest total weight wins."""
    best: tuple[float, list[tuple[int, int]]] = (-1.0, [])
    preds = list(range(n_pred)) + [None] * n_true
    for choice in itertools.permutations(preds, n_true):
        pairs = [(t, p) for t, p in enumerate(choice) if p is not None and (t, p) in weights]
        if len(pairs) != sum(p is not None for p in choice):
            continue
        total = sum(weights[pair] for pair in pairs)
        if total > best[0]:
            best = (total, pairs)
    return best[1]


def instance_counts(pred: np.ndarray, truth: np.ndarray, voxel: np.ndarray) -> dict:
    pred = components(pred)
    true_ids = [v for v in np.unique(truth) if v]
    pred_ids = [v for v in np.unique(pred) if v]
    cap = min(voxel * np.array(truth.shape)) / 2
    if true_ids and len(pred_ids) / len(true_ids) > 10 + 50 * math.exp(-len(true_ids) / 5):
        return {"tp": 0, "fp": 0, "fn": 0, "hausdorff_norm_sum": 0.0, "n_hausdorff": 0}
    weights = {}
    for i, t in enumerate(true_ids):
        for j, p in enumerate(pred_ids):
            a, b = truth == t, pred == p
            inter = np.count_nonzero(a & b)
            if inter:
                iou = inter / np.count_nonzero(a | b)
                weights[(i, j)] = (S + 1) - math.floor((1 - iou) * S)
    matched = best_matching(weights, len(true_ids), len(pred_ids))
    distances = [cap] * len(true_ids)
    for i, j in matched:
        distances[i] = min(hausdorff(truth == true_ids[i], pred == pred_ids[j], voxel), cap)
    fp = len(pred_ids) - len(matched)
    distances += [cap] * fp
    norm = [1.01 ** (-d / np.linalg.norm(voxel)) for d in distances]
    return {
        "tp": len(matched),
        "fp": fp,
        "fn": len(true_ids) - len(matched),
        "hausdorff_norm_sum": sum(norm),
        "n_hausdorff": len(norm),
    }


def semantic_counts(pred: np.ndarray, truth: np.ndarray) -> dict:
    p, t = pred > 0, truth > 0
    return {"tp": int((p & t).sum()), "fp": int((p & ~t).sum()), "fn": int((~p & t).sum())}


def missing(truth: np.ndarray, instance: bool) -> dict:
    if instance:
        n = len([v for v in np.unique(truth) if v])
        return {"tp": 0, "fp": 0, "fn": n, "hausdorff_norm_sum": 0.0, "n_hausdorff": n}
    return {"tp": 0, "fp": 0, "fn": truth.size}


def pooled(per_crop: dict[str, list[dict]]) -> dict:
    label_scores, instance_scores, semantic_scores = {}, [], []
    for name, crops in per_crop.items():
        tp, fp, fn = (sum(c[k] for c in crops) for k in ("tp", "fp", "fn"))
        if name in INSTANCE:
            norm_sum = sum(c["hausdorff_norm_sum"] for c in crops)
            n = sum(c["n_hausdorff"] for c in crops)
            if 2 * tp + fp + fn == 0 and n == 0:
                combined = 1.0
                scores = {"f1": 1.0, "normalized_hausdorff_distance": 1.0}
            else:
                f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
                nhd = norm_sum / n if n else 0.0
                combined = math.sqrt(f1 * nhd)
                scores = {"f1": f1, "normalized_hausdorff_distance": nhd}
            label_scores[name] = {**scores, "combined_score": combined}
            instance_scores.append(combined)
        else:
            iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
            label_scores[name] = {"iou": iou}
            semantic_scores.append(iou)
    instance = float(np.mean(instance_scores)) if instance_scores else 0.0
    semantic = float(np.mean(semantic_scores)) if semantic_scores else 0.0
    return {
        "label_scores": label_scores,
        "overall_instance_score": instance,
        "overall_semantic_score": semantic,
        "overall_score": math.sqrt(instance * semantic),
    }


# --- hand-made truth and submission -------------------------------------------------------


def box(shape, *slices, value=1, dtype=np.uint16):
    a = np.zeros(shape, dtype=dtype)
    a[slices] = value
    return a


def make_case(tmp_path: Path) -> tuple[Path, Path, dict, dict]:
    """Truth and submission folders, the truth arrays and the predictions on the truth grids."""
    truth: dict[str, dict[str, tuple[np.ndarray, tuple, tuple]]] = {}
    on_grid: dict[str, dict[str, np.ndarray | None]] = {}
    sub = zarr.open_group(tmp_path / "submission.zarr", mode="w", zarr_format=2)

    # crop1, 4 nm: two mitochondria (one predicted shifted, one split in two, plus a stray
    # blob), an ER mask scored inside its certainty mask only.
    v1, t1 = (4.0, 4.0, 4.0), (2.0, 2.0, 2.0)
    mito = box((3, 14, 14), slice(0, 3), slice(1, 5), slice(1, 5))
    mito[:, 8:13, 7:12] = 2
    pred = box((3, 14, 14), slice(0, 3), slice(1, 5), slice(2, 6), value=9)
    pred[:, 8:13, 7:9] = 4
    pred[:, 8:13, 10:12] = 4  # the same id, not touching: two components
    pred[1, 0, 12] = 7
    er = box((3, 14, 14), slice(None), slice(5, 8), slice(0, 14), dtype=np.uint8)
    er_pred = box((3, 14, 14), slice(None), slice(6, 9), slice(0, 14), dtype=np.uint8)
    er_mask = box((3, 14, 14), slice(None), slice(0, 14), slice(0, 10), dtype=np.uint8)
    truth["crop1"] = {"mito": (mito, v1, t1), "er": (er, v1, t1)}
    c1 = sub.require_group("crop1")
    write_array(c1, "mito", pred, voxel_size=list(v1), translation=list(t1))
    write_array(c1, "er", er_pred, voxel_size=list(v1), translation=list(t1))
    on_grid["crop1"] = {"mito": pred, "er": er_pred * er_mask}

    # crop2, 8 nm: one mitochondrion predicted at 4 nm (nearest: every other voxel); ER predicted
    # at 16 nm (linear interpolation, then > 0.5).
    v2, t2 = (8.0, 8.0, 8.0), (100.0, 100.0, 100.0)
    mito2 = box((4, 8, 8), slice(1, 3), slice(2, 6), slice(2, 5))
    fine = np.zeros((8, 16, 16), dtype=np.uint32)
    fine[2:6, 4:11, 4:9] = 5
    er2 = box((4, 8, 8), slice(None), slice(0, 4), slice(None), dtype=np.uint8)
    coarse = box((3, 5, 5), slice(None), slice(0, 2), slice(None), dtype=np.uint8)
    coarse_translation = (104.0, 100.0, 100.0)
    truth["crop2"] = {"mito": (mito2, v2, t2), "er": (er2, v2, t2)}
    c2 = sub.require_group("crop2")
    write_array(c2, "mito", fine, voxel_size=[4, 4, 4], translation=list(t2))
    write_array(c2, "er", coarse, voxel_size=[16, 16, 16], translation=list(coarse_translation))
    centres = [
        (t + v * np.arange(n) - c) / 16
        for t, v, n, c in zip(t2, v2, er2.shape, coarse_translation, strict=True)
    ]
    grid = np.meshgrid(*centres, indexing="ij")
    linear = ndimage.map_coordinates(coarse.astype(float), grid, order=1, mode="nearest")
    on_grid["crop2"] = {"mito": fine[::2, ::2, ::2], "er": (linear > 0.5).astype(np.uint8)}

    # crop3: nuc not submitted (scored as missing), ER empty on both sides.
    v3, t3 = (8.0, 8.0, 8.0), (0.0, 0.0, 0.0)
    nuc = box((4, 6, 6), slice(1, 3), slice(1, 5), slice(1, 5))
    nuc[3, 0, 0] = 2
    empty = np.zeros((4, 6, 6), dtype=np.uint8)
    truth["crop3"] = {"nuc": (nuc, v3, t3), "er": (empty, v3, t3)}
    write_array(sub.require_group("crop3"), "er", empty, voxel_size=list(v3), translation=list(t3))
    on_grid["crop3"] = {"nuc": None, "er": empty}

    # crop4: not in the submission at all.
    truth["crop4"] = {"mito": (box((2, 4, 4), slice(0, 1), slice(0, 2), slice(0, 2)), v3, t3)}
    on_grid["crop4"] = {"mito": None}

    # crop5: far more predicted objects than true ones: the crop counts nothing.
    single = box((1, 30, 30), slice(0, 1), slice(0, 2), slice(0, 2))
    dots = np.zeros((1, 30, 30), dtype=np.uint16)
    dots[0, 4::2, 4::2] = 1
    truth["crop5"] = {"mito": (single, v3, t3)}
    write_array(sub.require_group("crop5"), "mito", dots, voxel_size=list(v3), translation=list(t3))
    on_grid["crop5"] = {"mito": dots}

    # A crop the truth does not have: ignored.
    write_array(
        sub.require_group("crop99"), "mito", dots, voxel_size=list(v3), translation=list(t3)
    )

    truth_path = write_truth(tmp_path / "truth.zarr", truth)
    write_array(zarr.open_group(truth_path / "crop1"), "er_mask", er_mask)
    arrays = {
        c: {n: (a * er_mask if (c, n) == ("crop1", "er") else a) for n, (a, _, _) in v.items()}
        for c, v in truth.items()
    }
    return tmp_path / "submission.zarr", truth_path, arrays, on_grid


def expected_scores(arrays: dict, on_grid: dict, voxels: dict) -> tuple[dict, dict]:
    per_crop, per_class = {}, {}
    for crop, classes in arrays.items():
        per_crop[crop] = {}
        for name, truth in classes.items():
            pred = on_grid[crop][name]
            instance = name in INSTANCE
            if pred is None:
                counts = missing(truth, instance)
            elif instance:
                counts = instance_counts(pred, truth, np.array(voxels[crop]))
            else:
                counts = semantic_counts(pred, truth)
            per_crop[crop][name] = counts
            per_class.setdefault(name, []).append(counts)
    return per_crop, pooled(per_class)


def test_scores_equal_the_definitions_computed_by_hand(tmp_path: Path):
    submission, truth, arrays, on_grid = make_case(tmp_path)
    voxels = {
        "crop1": (4.0,) * 3,
        "crop2": (8.0,) * 3,
        "crop3": (8.0,) * 3,
        "crop4": (8.0,) * 3,
        "crop5": (8.0,) * 3,
    }
    per_crop, expected = expected_scores(arrays, on_grid, voxels)
    # Sanity of the hand-made case: it exercises each rule.
    assert per_crop["crop1"]["mito"]["tp"] == 2 and per_crop["crop1"]["mito"]["fp"] == 2
    assert per_crop["crop5"]["mito"]["n_hausdorff"] == 0  # pathological
    assert per_crop["crop3"]["nuc"]["fn"] == 2

    with zipfile.ZipFile(tmp_path / "submission.zip", "w") as archive:
        for path in sorted(submission.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(submission).as_posix())
    for source in (submission, tmp_path / "submission.zip"):
        result = evaluate_submission(
            source,
            truth,
            instance_classes=INSTANCE,
            alignment="physical",
            json_path=tmp_path / "s.json",
            overwrite=True,
        )
        report = json.loads((tmp_path / "s.json").read_text())
        for key in ("overall_score", "overall_instance_score", "overall_semantic_score"):
            assert report[key] == pytest.approx(expected[key], abs=1e-12), key
        for name, scores in expected["label_scores"].items():
            for key, value in scores.items():
                assert report["label_scores"][name][key] == pytest.approx(value, abs=1e-12), (
                    name,
                    key,
                )
        for crop, classes in per_crop.items():
            for name, counts in classes.items():
                for key, value in counts.items():
                    assert report["crops"][crop][name][key] == pytest.approx(value, abs=1e-12), (
                        crop,
                        name,
                        key,
                    )
        assert report["crops"]["crop3"]["nuc"]["is_missing"] is True
        assert report["crops"]["crop5"]["mito"]["status"] == "skipped_too_many_instances"
        assert report["missing_crops"] == ["crop4"] and report["ignored"] == ["crop99"]
        assert result.scores["overall_score"] == pytest.approx(expected["overall_score"])


def test_cli_scores_a_submission_zip(tmp_path: Path, cli):
    submission, truth, _, _ = make_case(tmp_path)
    result = cli(
        "cellmap",
        "evaluate",
        "--alignment",
        "physical",
        "--pred",
        submission,
        "--truth",
        truth,
        "--json",
        tmp_path / "r.json",
    )
    assert result.code == 0, result.err
    assert "overall" in result.out and "missing crops (scored as empty): crop4" in result.out
    assert "not the leaderboard's number" in result.out
    assert json.loads((tmp_path / "r.json").read_text())["follows"].startswith("CellMap challenge")
    bad = cli("evaluate", "--task", "cellmap", "--pred", tmp_path / "nothing.zip", "--truth", truth)
    assert bad.code == 2 and "does not exist" in bad.err
