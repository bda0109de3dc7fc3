"""`evaluate --task cellmap` on single files: one class, named after the head, scored as the
challenge scores it (a mask as semantic, labels as instances) through bioim2im's pairing and
reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from bioim2im import evaluate


def tif(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)
    return path


def square(y: int, x: int, size: int = 4, shape: tuple[int, int] = (32, 32)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[y : y + size, x : x + size] = 1
    return mask


def objects(n: int) -> np.ndarray:
    """``n`` separate 4 x 4 objects labelled 1..n in a 32 x 32 image."""
    labels = np.zeros((32, 32), np.uint16)
    for i in range(n):
        y, x = divmod(i, 4)
        labels[y * 8 : y * 8 + 4, x * 8 : x * 8 + 4] = i + 1
    return labels


def test_cellmap_scores_a_mask_as_semantic_and_labels_as_instances(tmp_path: Path) -> None:
    pred = tif(tmp_path / "p.tif", square(4, 6))
    truth = tif(tmp_path / "t.tif", square(4, 4))

    mask = evaluate(pred, truth, task="cellmap")
    assert mask.rows[0] == {
        "name": "t",
        "object/iou": pytest.approx(1 / 3),
        "overall_semantic_score": pytest.approx(1 / 3),
    }
    assert "semantic mask" in mask.task_reason

    tif(pred, objects(3))
    tif(truth, objects(3))
    labels = evaluate(pred, truth, task="cellmap", head="mito")
    assert labels.rows[0] == {
        "name": "t",
        "mito/f1": 1.0,
        "mito/normalized_hausdorff_distance": 1.0,
        "mito/combined_score": 1.0,
        "overall_instance_score": 1.0,
    }
