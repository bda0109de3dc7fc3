"""The core knows no plugin: the CellMap workflow is the bioim2im-cellmap plugin
(``plugins/bioim2im-cellmap``), and no file of the ``bioim2im`` package nor a preset it ships
names it. (import-linter keeps the core from importing the plugin: ``test_layers.py``.)"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = [REPO / "src" / "bioim2im", REPO / "presets"]


def test_no_file_of_the_core_mentions_cellmap() -> None:
    files = [
        path
        for root in CORE
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert len(files) > 100
    found = [
        str(path.relative_to(REPO)) for path in files if b"cellmap" in path.read_bytes().lower()
    ]
    assert found == [], "the core names the CellMap plugin: move this into the plugin"
