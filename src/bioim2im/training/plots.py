"""PNG montages of validation predictions and the loss curve, drawn with Pillow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def _to_uint8(plane: np.ndarray) -> np.ndarray:
    plane = plane.astype(np.float32)
    lo, hi = np.percentile(plane, (0.5, 99.5)) if plane.size else (0.0, 1.0)
    scaled = (plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def middle_plane(array: np.ndarray) -> np.ndarray:
    """First channel, middle Z slice for 3D: what a montage shows of (C, *spatial)."""
    plane = array[0]
    while plane.ndim > 2:
        plane = plane[plane.shape[0] // 2]
    return plane


def save_montage(rows: list[list[np.ndarray]], path: Path) -> np.ndarray:
    """Each row: arrays shaped (C, *spatial), drawn side by side (input / target / prediction);
    returns the montage written, (H, W) uint8."""
    tiles = [[_to_uint8(middle_plane(a)) for a in row] for row in rows]
    height = max(t.shape[0] for row in tiles for t in row)
    width = max(sum(t.shape[1] for t in row) + 4 * (len(row) - 1) for row in tiles)
    canvas = Image.new("L", (width, len(tiles) * (height + 4)), color=0)
    for r, row in enumerate(tiles):
        x = 0
        for tile in row:
            canvas.paste(Image.fromarray(tile), (x, r * (height + 4)))
            x += tile.shape[1] + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return np.asarray(canvas)


def save_loss_curve(
    records: list[dict[str, Any]], path: Path, size: tuple[int, int] = (640, 400)
) -> None:
    """Training loss (and validation loss when present) against step."""
    series = {
        key: [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        for key in ("loss", "val/loss")
    }
    series = {k: v for k, v in series.items() if len(v) >= 1}
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 60, 20, size[0] - 20, size[1] - 40
    draw.rectangle((left, top, right, bottom), outline="black")
    points = [p for values in series.values() for p in values]
    if points:
        steps = [p[0] for p in points]
        values = [p[1] for p in points]
        s0, s1 = min(steps), max(max(steps), min(steps) + 1)
        v0, v1 = min(values), max(max(values), min(values) + 1e-12)

        def xy(step: float, value: float) -> tuple[float, float]:
            return (
                left + (step - s0) / (s1 - s0) * (right - left),
                bottom - (value - v0) / (v1 - v0) * (bottom - top),
            )

        for (key, values_), color in zip(series.items(), ("steelblue", "darkorange"), strict=False):
            line = [xy(s, v) for s, v in values_]
            if len(line) > 1:
                draw.line(line, fill=color, width=2)
            else:
                draw.ellipse(
                    (line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2), fill=color
                )
            draw.text((right - 80, top + 5 + 14 * list(series).index(key)), key, fill=color)
        draw.text((5, top), f"{v1:.3g}", fill="black")
        draw.text((5, bottom - 10), f"{v0:.3g}", fill="black")
        draw.text((left, bottom + 5), f"step {s0}", fill="black")
        draw.text((right - 70, bottom + 5), f"step {s1}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
