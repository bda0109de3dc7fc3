"""The shipped presets (the repository's top-level ``presets/``, inside the wheel)."""

from __future__ import annotations

from pathlib import Path

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar


def presets_dir() -> Path:
    """The shipped presets: inside the installed wheel, or the repo's top-level ``presets/``."""
    packaged = Path(__file__).resolve().parent.parent / "presets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "presets"


@hookimpl
def bioim2im_register_presets(registry: Registrar) -> None:
    for path in sorted(presets_dir().glob("*.toml")):
        registry.add(path.stem, path, preset_description(path))


def preset_description(path: Path) -> str:
    """The first sentence of a preset file's leading comment: its description (a plugin's
    presets are described the same way)."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            if line.strip() or words:
                break
            continue
        words.append(line.lstrip("# ").strip())
        if words[-1].endswith(".") or len(words) == 3:
            break
    text = " ".join(w for w in words if w)
    return text.split(". ")[0].removesuffix(".") + "." if text else ""
