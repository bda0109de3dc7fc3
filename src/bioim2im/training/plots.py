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


CURVE_SIZE = (12.0, 4.0)
CURVE_DPI = 100
"""loss_curve.png: 1200 x 400 pixels."""


def save_loss_curve(records: list[dict[str, Any]], path: Path) -> Any:
    """The run's figure, with matplotlib: loss and validation loss, the learning rate, and each
    head's validation metrics against the step, losses and learning rate on log axes, with
    titles, axis labels, ticks and legends. Returns the figure (closed), or None where
    matplotlib is missing (then a plain drawing of the losses)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        _pillow_loss_curve(records, path)
        return None

    def series(key: str) -> tuple[list[int], list[float]]:
        pairs = [
            (int(r["step"]), float(r[key]))
            for r in records
            if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
        ]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    keys = sorted({k for r in records for k in r})
    metrics = [
        k
        for k in keys
        if k.startswith("val/") and k != "val/loss" and not k.endswith("/loss")
        and not k.rsplit("/", 1)[-1].isdigit()  # per-class values: the mean is drawn
    ]  # fmt: skip
    figure, (losses, rate, scores) = plt.subplots(1, 3, figsize=CURVE_SIZE, dpi=CURVE_DPI)
    for key, label in (("loss", "training loss"), ("val/loss", "validation loss")):
        steps, values = series(key)
        if steps:
            losses.plot(steps, values, marker="." if len(steps) < 30 else None, label=label)
    _log_axis(losses, "Loss", "loss")
    steps, values = series("lr")
    if steps:
        rate.plot(steps, values, color="tab:green", label="learning rate")
    _log_axis(rate, "Learning rate", "learning rate")
    for key in metrics:
        steps, values = series(key)
        if steps:
            scores.plot(steps, values, marker="o", label=key.removeprefix("val/"))
    scores.set_title("Validation metrics per head")
    scores.set_xlabel("step")
    scores.set_ylabel("value")
    scores.grid(True, alpha=0.3)
    if scores.lines:
        scores.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return figure


def _log_axis(axes: Any, title: str, label: str) -> None:
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(label)
    values = [v for line in axes.lines for v in line.get_ydata()]
    if values and min(values) > 0:
        axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    if axes.lines:
        axes.legend(fontsize="small")


def _pillow_loss_curve(
    records: list[dict[str, Any]], path: Path, size: tuple[int, int] = (640, 400)
) -> None:
    """Training loss (and validation loss when present) against step, drawn by hand: only where
    matplotlib (a dependency) is missing."""
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
