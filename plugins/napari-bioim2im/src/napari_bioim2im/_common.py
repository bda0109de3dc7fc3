"""What the widgets share: layer pickers that follow the viewer, ``--set`` lines, runs found
under a folder, and adding layer data to the viewer."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox

from napari_bioim2im._layers import LayerData


def layer_picker(viewer: Any, label: str, kinds: tuple[str, ...], **options: Any) -> ComboBox:
    """A drop-down of the viewer's layers of ``kinds`` (``image``, ``labels``), kept up to date
    as layers are added, removed or renamed."""

    def choices(_: Any = None) -> list[tuple[str, Any]]:
        return [
            (layer.name, layer) for layer in viewer.layers if type(layer).__name__.lower() in kinds
        ]

    picker = ComboBox(label=label, choices=choices, nullable=False, **options)
    events = viewer.layers.events
    for event in (events.inserted, events.removed, events.moved):
        event.connect(lambda *_: picker.reset_choices())
    # A renamed layer keeps its place but its name changes in the list.
    viewer.layers.selection.events.changed.connect(lambda *_: picker.reset_choices())
    return picker


def overrides_from(text: str) -> list[str]:
    """``--set`` overrides, one per line (``key.path=value``); a leading ``--set`` is allowed,
    blank lines and ``#`` comments are skipped."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("--set"):
            line = line[len("--set") :].strip()
        if line and not line.startswith("#"):
            found.append(line)
    return found


def chosen_path(value: Any) -> Path | None:
    """A FileEdit's path, or None when nothing was chosen."""
    text = str(value or "").strip()
    return None if text in ("", ".") else Path(text).expanduser()


def is_run(path: Path) -> bool:
    return (path / "preset.toml").is_file() and (path / "checkpoints").is_dir()


def find_runs(folder: Path, depth: int = 2) -> list[Path]:
    """Run directories at most ``depth`` levels under ``folder``, newest first."""
    found: list[Path] = []
    level: Iterable[Path] = [folder]
    for _ in range(depth + 1):
        following: list[Path] = []
        for path in level:
            if not path.is_dir():
                continue
            if is_run(path):
                found.append(path)
                continue
            try:
                following += [
                    p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")
                ]
            except OSError:
                continue
        level = following
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def add_layers(viewer: Any, layers: Iterable[LayerData]) -> list[Any]:
    added = []
    for data, kwargs, kind in layers:
        added.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return added
