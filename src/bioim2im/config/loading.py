"""Reading presets: TOML files, ``extends`` chains, ``--set`` overrides, validation."""

from __future__ import annotations

import copy
import errno
import sys
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import Any

from pydantic import ValidationError

from bioim2im.config import toml_out
from bioim2im.config.build import preset_model
from bioim2im.config.components import component_keys, shorthand_keys
from bioim2im.config.errors import format_validation_errors
from bioim2im.config.schema import HeadConfig, Preset, expand_shorthand
from bioim2im.errors import PluginError, UserError
from bioim2im.plugin.hookspecs import WITHOUT_PARAMETERS
from bioim2im.plugin.registry import ComponentRegistry, suggest
from bioim2im.userfiles import MAX_PRESET_BYTES, read_text, user_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Keys holding paths; relative values are taken relative to the file that sets them. So are
# the parameters of components typed as paths (a layout's table of classes, say).
PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("data", "path"),
    ("data", "val_path"),
    ("data", "cache_dir"),
    ("train", "init_from"),
)
# Keys of a head table that are not its component's parameters: kept when `name` changes.
HEAD_KEYS = frozenset(HeadConfig.model_fields) - {"name"}


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file, line and column."""
    if path.is_dir():
        raise UserError(f"preset path is a directory, not a TOML file: {path}")
    try:
        text = read_text(path, what="preset", limit=MAX_PRESET_BYTES)
    except FileNotFoundError:
        raise UserError(f"preset file not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read preset {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        data = None
    if data is None or too_deep(data):
        raise UserError(f"{path} nests tables or arrays more than {MAX_DEPTH} deep")
    return data


MAX_DEPTH = 32
"""The deepest a preset nests tables and arrays; real presets need about 6."""


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests dicts and lists more than ``limit`` deep (without recursion)."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        level = [
            child
            for item in level
            if isinstance(item, (dict, list))
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return False
    return True


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=VALUE"`` -> (["a", "b", "c"], VALUE parsed as TOML, or the bare string)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if len(parts) > MAX_DEPTH:
        raise UserError(f"--set {text[:60]!r}...: the key is more than {MAX_DEPTH} levels deep")
    if not sep or not all(p.strip() for p in parts):
        raise UserError(
            f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set train.steps=500 "
            "or --set 'model.backbone.channels=[16, 32, 64]'"
        )
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare string: --set data.path=my_data/
    except RecursionError:
        value = None
    if value is None or too_deep(value, MAX_DEPTH - len(parts)):
        raise UserError(
            f"--set {key.strip()[:60]}=...: the value nests arrays or tables too deeply"
        )
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


def apply_override(
    data: dict[str, Any], text: str, registry: ComponentRegistry | None = None
) -> dict[str, Any]:
    """``data`` with ``--set text`` applied; with ``registry``, relative paths it gives are
    taken relative to the working directory."""
    keys, value = parse_override(text)
    nested: Any = value
    for part in reversed(keys):
        nested = {part: nested}
    nested = _expand_shorthands(nested)
    if registry is not None:
        nested = _absolutize(nested, Path.cwd(), registry, base=data)
    node: Any = data
    for depth, part in enumerate(keys[:-1]):
        node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, dict):
            where = ".".join(keys[: depth + 1])
            raise UserError(f"--set {text!r}: '{where}' is a value ({node!r}), not a table")
    return merge(data, nested)


def _absolutize(
    data: dict[str, Any],
    base_dir: Path,
    registry: ComponentRegistry,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Relative paths ``data`` sets (:data:`PATH_KEYS` and path parameters of components),
    made absolute from ``base_dir``; ``base``: what ``data`` is merged onto (it may name a
    component whose parameters ``data`` sets)."""
    places: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for *sections, key in PATH_KEYS:
        table: Any = data
        for section in sections:
            table = table.get(section) if isinstance(table, dict) else None
        if isinstance(table, dict):
            places.append(((*sections, key), table))
    places += _component_paths(data, registry, base)
    for keys, table in places:
        if isinstance(table.get(keys[-1]), str):
            text = table[keys[-1]]
            value = user_path(text, f"{'.'.join(keys)} = {text!r}")
            table[keys[-1]] = str(value if value.is_absolute() else (base_dir / value).resolve())
    return data


def local_path_keys(data: dict[str, Any], registry: ComponentRegistry) -> list[tuple[str, ...]]:
    """The keys of a resolved preset (as plain data) that hold local paths: :data:`PATH_KEYS`
    and the path parameters of the components it names."""
    return [*PATH_KEYS, *(keys for keys, _ in _component_paths(data, registry, None))]


def _component_paths(
    data: dict[str, Any], registry: ComponentRegistry, base: dict[str, Any] | None
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """(key, its table) of each parameter typed as a path of the component tables in ``data``;
    a table without ``name`` is of the component ``base`` names there."""
    for place, kind in component_keys().items():
        if kind in WITHOUT_PARAMETERS:
            continue
        for keys, table in _tables_at(data, tuple(place.split("."))):
            name = table.get("name")
            if name is None and base is not None:
                found = dict(_tables_at(base, keys)).get(keys)
                name = found.get("name") if found is not None else None
            if not isinstance(name, str) or (kind, name) not in registry:
                continue
            try:
                fields = registry.get(kind, name).params.model_fields
            except PluginError:
                continue  # validation reports a component that cannot be loaded
            for field, info in fields.items():
                if field in table and _is_path(info.annotation):
                    yield (*keys, field), table


def _tables_at(
    data: Any, place: tuple[str, ...], found: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """The tables at ``place`` (``<name>``: any key; a list: each of its tables)."""
    if isinstance(data, list):
        for index, item in enumerate(data):
            yield from _tables_at(item, place, (*found, str(index)))
        return
    if not isinstance(data, dict):
        return
    if not place:
        yield found, data
        return
    first, rest = place[0], place[1:]
    keys = list(data) if first == "<name>" else [first] if first in data else []
    for key in keys:
        yield from _tables_at(data[key], rest, (*found, key))


def _is_path(annotation: Any) -> bool:
    """Whether ``annotation`` (a parameter's type) takes a path."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_path(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_path(a) for a in typing.get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, PurePath)


def _expand_shorthands(data: dict[str, Any]) -> dict[str, Any]:
    """A component's name written alone where the schema allows it (``data.layout =
    "folders"``) as the table it stands for, so that it merges like one."""
    for *sections, key in shorthand_keys():
        table: Any = data
        for section in sections:
            table = table.get(section) if isinstance(table, dict) else None
        if isinstance(table, dict) and key in table:
            table[key] = expand_shorthand(table[key])
    return data


def _find_preset(name: str, relative_to: Path, registry: ComponentRegistry) -> Path:
    looks_like_a_path = name.endswith(".toml") or "/" in name
    candidate = user_path(name, f"{relative_to}: extends = {name!r}")
    candidate = candidate if candidate.is_absolute() else relative_to / candidate
    if looks_like_a_path or ("preset", name) not in registry:
        problem = _not_a_file(candidate)
        if problem is None:
            return candidate
        if looks_like_a_path or candidate.exists() or candidate.is_symlink():
            raise UserError(f"{relative_to}: extends = {name!r}: {problem}")
    try:
        return Path(registry.get("preset", name).load())
    except UserError as exc:
        raise UserError(f"{relative_to}: extends = {name!r}: {exc}") from None


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a preset file, or None."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a loop of symbolic links"
        return f"no such file {path}"
    if path.is_dir():
        return f"{path} is a directory, not a TOML file"
    if not path.is_file():
        return f"{path} is not a regular file (a FIFO, socket or device), not a TOML file"
    return None


def resolve(path: Path, overrides: Iterable[str], registry: ComponentRegistry) -> dict[str, Any]:
    """The preset as one table: its ``extends`` chain merged, then the overrides applied."""
    return apply_overrides(_load_chain(Path(path), registry, seen=()), overrides, registry)


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str], registry: ComponentRegistry
) -> dict[str, Any]:
    """``data`` with ``--set`` overrides applied in order (relative paths: from here)."""
    for text in overrides:
        data = apply_override(data, text, registry) if text else data
    return data


def _load_chain(path: Path, registry: ComponentRegistry, seen: tuple[Path, ...]) -> dict[str, Any]:
    problem = _not_a_file(path)
    if problem is not None:
        raise UserError(
            f"preset file not found: {path}" if problem.startswith("no such") else problem
        )
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise UserError(f"presets extend each other in a cycle: {chain}")
    data = _expand_shorthands(read_toml(path))
    parent = data.pop("extends", None)
    if parent is None:
        return _absolutize(data, path.parent, registry)
    if not isinstance(parent, str):
        raise UserError(f"{path}: extends must be a preset name or a .toml path, got {parent!r}")
    base = _load_chain(_find_preset(parent, path.parent, registry), registry, (*seen, path))
    return merge(base, _absolutize(data, path.parent, registry, base=base))


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
    preset: str | Path,
    overrides: Sequence[str] = (),
    registry: ComponentRegistry | None = None,
) -> Preset:
    """Read, resolve and validate a preset: a file, or the name of a shipped or plugin preset.
    Raises UserError on any problem."""
    if registry is None:
        from bioim2im.plugin.manager import get_registry

        registry = get_registry()
    path = find_preset(preset, registry)
    data = resolve(path, overrides, registry)
    return validate(data, registry, f"preset {preset}")


def find_preset(preset: str | Path, registry: ComponentRegistry) -> Path:
    """The file of ``preset``: a path to a TOML file, or a registered preset's name.

    A bare word that is both a preset's name and a file here is refused rather than guessed.
    """
    text = str(preset)
    path = user_path(text, "preset")
    looks_like_a_path = isinstance(preset, Path) or text.endswith(".toml") or "/" in text
    named = not looks_like_a_path and ("preset", text) in registry
    if named and path.exists():
        raise UserError(
            f"{text!r} is both a preset name and a file in {Path.cwd()}: write ./{text} for the "
            f"file, or run from another folder for the {registry.get('preset', text).package} "
            "preset"
        )
    if named:
        return Path(registry.get("preset", text).load())
    if path.is_dir():
        raise UserError(f"preset path is a directory, not a TOML file: {path}")
    if path.exists() or looks_like_a_path:
        return path
    names = registry.names("preset")
    raise UserError(
        f"no preset file or preset named {text!r}{suggest(text, names)} "
        f"(presets: {', '.join(names) or 'none'})"
    )


def to_toml(preset: Preset) -> str:
    """The resolved preset as TOML, components' `name` first, unset values left out, and a
    component without parameters written as its name where the schema allows it."""
    data = name_first(preset.model_dump(mode="json", exclude_none=True))
    for *sections, key in shorthand_keys():
        table: Any = data
        for section in sections:
            table = table.get(section) if isinstance(table, dict) else None
        if (
            isinstance(table, dict)
            and isinstance(table.get(key), dict)
            and set(table[key]) == {"name"}
        ):
            table[key] = table[key]["name"]
    return toml_out.dumps(data)


def name_first(value: Any) -> Any:
    """Component tables with their ``name`` first, as presets write them."""
    if isinstance(value, dict):
        ordered = {"name": value["name"]} if "name" in value else {}
        ordered.update((k, name_first(v)) for k, v in value.items() if k != "name")
        return ordered
    if isinstance(value, list):
        return [name_first(v) for v in value]
    return value
