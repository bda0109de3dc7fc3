"""PNG montages of validation predictions (titled panels of at least 256 pixels) and the loss
curve, drawn with Pillow."""

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


PANEL = 256
"""Least edge of a montage panel in pixels: a patch is enlarged (nearest neighbour, whole
factors) to at least this."""
TITLE = 22
"""Height of the title band above each panel."""


def max_projection(array: np.ndarray) -> np.ndarray:
    """First channel, maximum over Z for 3D (over every axis before the last two)."""
    plane = array[0]
    while plane.ndim > 2:
        plane = plane.max(axis=0)
    return plane


def save_montage(
    rows: list[list[np.ndarray]], path: Path, titles: list[list[str]] | None = None
) -> np.ndarray:
    """Each row: arrays shaped (C, *spatial), drawn side by side (input / target / prediction)
    under their ``titles``, each panel enlarged to at least :data:`PANEL` pixels; a 3D row
    shows the middle Z slice, then a row of maximum projections over Z. Returns the montage
    written, (H, W) uint8 (what TensorBoard gets too)."""
    from PIL import ImageFont

    font = ImageFont.load_default(size=14)
    lines: list[tuple[list[np.ndarray], list[str]]] = []
    for r, row in enumerate(rows):
        names = list(titles[r]) if titles is not None else [""] * len(row)
        three_d = any(a.ndim > 3 for a in row)
        middle = [_to_uint8(middle_plane(a)) for a in row]
        lines.append((middle, [f"{n} (middle z)" if three_d else n for n in names]))
        if three_d:
            projected = [_to_uint8(max_projection(a)) for a in row]
            lines.append((projected, [f"{n} (max over z)" for n in names]))
    panels = [[_enlarged(tile) for tile in tiles] for tiles, _ in lines]
    height = max(t.shape[0] for row in panels for t in row) + TITLE
    width = max(sum(t.shape[1] for t in row) + 4 * (len(row) - 1) for row in panels)
    canvas = Image.new("L", (width, len(panels) * (height + 4)), color=0)
    draw = ImageDraw.Draw(canvas)
    for r, (row, (_, names)) in enumerate(zip(panels, lines, strict=True)):
        x, y = 0, r * (height + 4)
        for tile, name in zip(row, names, strict=True):
            draw.text((x + 4, y + 3), name, fill=255, font=font)
            canvas.paste(Image.fromarray(tile), (x, y + TITLE))
            x += tile.shape[1] + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return np.asarray(canvas)


def _enlarged(tile: np.ndarray) -> np.ndarray:
    """``tile`` repeated a whole number of times along both axes, to at least PANEL pixels."""
    factor = max(1, -(-PANEL // max(1, min(tile.shape))))
    return np.kron(tile, np.ones((factor, factor), np.uint8))


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
