"""Reading presets: TOML files, ``extends`` chains, ``--set`` overrides, validation."""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bioim2im.config import toml_out
from bioim2im.config.build import preset_model
from bioim2im.config.errors import format_validation_errors
from bioim2im.config.schema import HeadConfig, Preset
from bioim2im.errors import UserError
from bioim2im.registry import ComponentRegistry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Keys holding paths; relative values are taken relative to the file that sets them.
PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("data", "path"),
    ("data", "val_path"),
    ("data", "cache_dir"),
    ("train", "init_from"),
    ("data", "cellmap", "class_table"),
)
# Keys of a head table that are not its component's parameters: kept when `name` changes.
HEAD_KEYS = frozenset(HeadConfig.model_fields) - {"name"}


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"preset file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"preset path is a directory, not a TOML file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read preset {path}: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=VALUE"`` -> (["a", "b", "c"], VALUE parsed as TOML, or the bare string)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise UserError(
            f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set train.steps=500 "
            "or --set 'model.backbone.channels=[16, 32, 64]'"
        )
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare string: --set data.path=my_data/
    return [p.strip() for p in parts], value


def merge(
    base: dict[str, Any], override: dict[str, Any], path: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``: tables merge, everything else replaces.

    A component table whose ``name`` changes starts afresh (its old parameters belong to the
    old component); a head table keeps its head keys (loss, target, ...).
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = merge(_renamed(old, value.get("name"), (*path, key)), value, (*path, key))
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _renamed(table: dict[str, Any], new_name: Any, path: tuple[str, ...]) -> dict[str, Any]:
    if new_name is None or table.get("name", new_name) == new_name:
        return table
    is_head = len(path) == 3 and path[:2] == ("model", "heads")
    return {k: v for k, v in table.items() if is_head and k in HEAD_KEYS}


def apply_override(data: dict[str, Any], text: str) -> dict[str, Any]:
    keys, value = parse_override(text)
    nested: Any = value
    for part in reversed(keys):
        nested = {part: nested}
    node: Any = data
    for depth, part in enumerate(keys[:-1]):
        node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, dict):
            where = ".".join(keys[: depth + 1])
            raise UserError(f"--set {text!r}: '{where}' is a value ({node!r}), not a table")
    return merge(data, nested)


def _absolutize(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    for *sections, key in PATH_KEYS:
        table: Any = data
        for section in sections:
            table = table.get(section) if isinstance(table, dict) else None
        if isinstance(table, dict) and isinstance(table.get(key), str):
            value = Path(table[key]).expanduser()
            table[key] = str(value if value.is_absolute() else (base_dir / value).resolve())
    return data


def _find_preset(name: str, relative_to: Path, registry: ComponentRegistry) -> Path:
    if name.endswith(".toml"):
        candidate = Path(name).expanduser()
        candidate = candidate if candidate.is_absolute() else relative_to / candidate
        if not candidate.is_file():
            raise UserError(f"extends = {name!r}: no such file {candidate}")
        return candidate
    try:
        return Path(registry.get("preset", name).load())
    except UserError as exc:
        raise UserError(f"{relative_to}: extends = {name!r}: {exc}") from None


def resolve(path: Path, overrides: Iterable[str], registry: ComponentRegistry) -> dict[str, Any]:
    """The preset as one table: its ``extends`` chain merged, then the overrides applied."""
    data = _load_chain(Path(path), registry, seen=())
    for text in overrides:
        data = _absolutize(apply_override(data, text), Path.cwd()) if text else data
    return data


def _load_chain(path: Path, registry: ComponentRegistry, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise UserError(f"presets extend each other in a cycle: {chain}")
    data = _absolutize(read_toml(path), path.parent)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise UserError(f"{path}: extends must be a preset name or a .toml path, got {parent!r}")
    base = _load_chain(_find_preset(parent, path.parent, registry), registry, (*seen, path))
    return merge(base, data)


def validate(data: dict[str, Any], registry: ComponentRegistry, source: str) -> Preset:
    """Validate a resolved table; every problem is reported at once."""
    model, info = preset_model(registry)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_errors(exc, data, model, info)
        noun = "problem" if len(problems) == 1 else "problems"
        raise UserError(f"{source} has {len(problems)} {noun}:", problems) from None


def load_preset(
    path: str | Path,
    overrides: Sequence[str] = (),
    registry: ComponentRegistry | None = None,
) -> Preset:
    """Read, resolve and validate a preset file. Raises UserError on any problem."""
    if registry is None:
        from bioim2im.plugins import get_registry

        registry = get_registry()
    data = resolve(Path(path), overrides, registry)
    return validate(data, registry, f"preset {path}")


def to_toml(preset: Preset) -> str:
    """The resolved preset as TOML, components' `name` first, unset values left out."""
    return toml_out.dumps(_name_first(preset.model_dump(mode="json", exclude_none=True)))


def _name_first(value: Any) -> Any:
    if isinstance(value, dict):
        ordered = {"name": value["name"]} if "name" in value else {}
        ordered.update((k, _name_first(v)) for k, v in value.items() if k != "name")
        return ordered
    if isinstance(value, list):
        return [_name_first(v) for v in value]
    return value
