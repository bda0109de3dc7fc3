"""What a user can look up without reading the source: the presets by name, every preset key
with its type, default and description, and a JSON Schema of preset files for editors.

All of it is built from the live registry, so the components and presets of installed plugins
are included.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from bioim2im.config.components import component_keys, shorthand_keys
from bioim2im.config.schema import ComponentSpec, HeadConfig
from bioim2im.errors import UserError
from bioim2im.plugin.hookspecs import WITHOUT_PARAMETERS
from bioim2im.plugin.registry import ComponentRegistry, suggest


def preset_rows(registry: ComponentRegistry) -> list[dict[str, str]]:
    """Every registered preset: name, description, package, version and file."""
    return [
        {
            "name": component.name,
            "description": component.description,
            "package": component.package,
            "version": component.version,
            "path": str(component.load()),
        }
        for component in registry
        if component.kind == "preset"
    ]


def show_preset(
    name: str,
    registry: ComponentRegistry,
    overrides: Sequence[str] = (),
    *,
    as_written: bool = False,
) -> str:
    """A registered preset as TOML: resolved (extends merged, defaults filled in, ``overrides``
    applied), or its file as written."""
    from bioim2im.config.loading import resolve, to_toml, validate

    if ("preset", name) not in registry:
        names = registry.names("preset")
        raise UserError(
            f"no preset named {name!r}{suggest(name, names)} (presets: {', '.join(names) or 'none'}"
            "; `bioim2im check FILE` prints a preset file resolved)"
        )
    component = registry.get("preset", name)
    path = Path(component.load())
    header = f"# {name}: {component.description}\n# from {component.package} {component.version}"
    if as_written:
        if overrides:
            raise UserError("--set changes the resolved preset; it does not apply to --as-written")
        return f"{header}, as written ({path.name})\n{path.read_text(encoding='utf-8')}"
    preset = validate(resolve(path, overrides, registry), registry, f"preset {name}")
    note = "resolved: every key with its value; save it, change it, train it by path"
    return f"{header}, {note}\n{to_toml(preset)}"


# ---------------------------------------------------------------------------------------------
# Every preset key: bioim2im options


@dataclass(frozen=True)
class Option:
    """One preset key (or one parameter of a component)."""

    key: str
    type: str
    default: str
    description: str
    kind: str | None = None
    """For a component key: the kind of component it names."""

    def to_json(self) -> dict[str, str | None]:
        return asdict(self)


COMPONENT_KEYS: dict[str, str] = component_keys()
"""The keys that name a registered component (a table with ``name`` and its parameters)."""
SHORTHAND_KEYS: frozenset[str] = frozenset(".".join(keys) for keys in shorthand_keys())
"""The component keys where the component's name alone stands for ``{ name = ... }``."""


def preset_options() -> list[Option]:
    """Every key of a preset, in the order of the schema."""
    from bioim2im.config.schema import Preset

    return list(_walk(Preset, ""))


def _walk(model: type[BaseModel], prefix: str) -> Iterator[Option]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if key.endswith(".name") and key.removesuffix(".name") in COMPONENT_KEYS:
            continue
        nested = _section(field.annotation)
        kind = COMPONENT_KEYS.get(key)
        if key == "model.heads":
            yield Option(key, "table of heads", "required", _text(field.description))
            yield Option(
                "model.heads.<name>",
                "head (name + parameters)",
                "required",
                "One task head, named by the user (e.g. seg): its component and the keys below.",
                "head",
            )
            yield from _walk(HeadConfig, "model.heads.<name>.")
        elif kind is not None:
            what = (
                f"list of {kind}s" if _is_list(field.annotation) else f"{kind} (name + parameters)"
            )
            default = _default(field)
            if key in SHORTHAND_KEYS:
                what = f"{kind} (name, or name + parameters)"
                value = field.get_default(call_default_factory=True)
                if isinstance(value, dict) and set(value) == {"name"}:
                    default = _default_value(value["name"])
            yield Option(key, what, default, _text(field.description), kind)
        elif nested is not None:
            yield Option(key, "table", "", _text(field.description or nested.__doc__))
            yield from _walk(nested, f"{key}.")
        else:
            yield Option(
                key, type_name(field.annotation), _default(field), _text(field.description)
            )


def component_options(registry: ComponentRegistry, kind: str) -> list[tuple[Any, list[Option]]]:
    """Each registered component of ``kind`` with its parameters."""
    return [(c, parameter_options(c)) for c in registry if c.kind == kind]


def parameter_options(component: Any) -> list[Option]:
    """A component's preset parameters: name, type, default, description."""
    if component.kind in WITHOUT_PARAMETERS:
        return []
    return [
        Option(name, type_name(field.annotation), _default(field), _text(field.description))
        for name, field in component.params.model_fields.items()
    ]


def find_options(registry: ComponentRegistry, section: str | None) -> list[Option]:
    """The keys under ``section`` (all without one); a UserError naming the sections when it
    matches none."""
    options = preset_options()
    if section is None:
        return options
    wanted = _generic(section.strip().strip("."))
    found = [o for o in options if o.key == wanted or o.key.startswith(f"{wanted}.")]
    if not found:
        sections = sorted({o.key.split(".")[0] for o in options})
        keys = [o.key for o in options]
        raise UserError(
            f"no preset key {section!r}{suggest(wanted, keys)} (sections: {', '.join(sections)}; "
            "or a key such as train.optimizer)"
        )
    return found


def _generic(key: str) -> str:
    """``model.heads.seg.loss`` -> ``model.heads.<name>.loss``: every head has the same keys."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[:2] == ["model", "heads"] and parts[2] != "<name>":
        parts[2] = "<name>"
    return ".".join(parts)


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model of a nested table (``adversarial``), if ``annotation`` is one."""
    for member in _members(annotation):
        component = isinstance(member, type) and issubclass(member, ComponentSpec)
        if isinstance(member, type) and issubclass(member, BaseModel) and not component:
            return member
    return None


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _is_list(annotation: Any) -> bool:
    return any(typing.get_origin(m) is list for m in _members(annotation))


def type_name(annotation: Any) -> str:
    """A type as a preset writer reads it: ``int``, ``list[float]``, ``"min" | "max"``, and
    ``(optional)`` when it may be left out without a default value."""
    members = _members(annotation)
    optional = type(None) in members
    names = [_one_type(m) for m in members if m is not type(None)]
    text = " | ".join(dict.fromkeys(names)) or "any"
    return f"{text} (optional)" if optional else text


def _one_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(v) if isinstance(v, str) else str(v).lower()
                          for v in typing.get_args(annotation))  # fmt: skip
    if origin in (list, tuple, set, frozenset):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        inner = " | ".join(dict.fromkeys(type_name(a) for a in args)) if args else "any"
        return f"list[{inner}]"
    if origin is dict:
        pair = typing.get_args(annotation)
        return f"table of {type_name(pair[1])}" if pair else "table"
    if annotation is typing.Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type):
        return {"str": "text", "NoneType": "none"}.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    return _default_value(value)


def _default_value(value: Any) -> str:
    from bioim2im.config.toml_out import _value

    if isinstance(value, Path):
        value = str(value)
    try:
        return _value(value)
    except (TypeError, ValueError):
        return repr(value)


def _text(description: str | None) -> str:
    return " ".join((description or "").split())


# ---------------------------------------------------------------------------------------------
# JSON Schema of preset files: bioim2im schema


def json_schema(registry: ComponentRegistry) -> dict[str, Any]:
    """A JSON Schema of preset TOML files, for editors (Taplo / Even Better TOML read a
    ``#:schema FILE`` comment at the top of a TOML file).

    Built from the registry, so every installed component and its parameters are known. A
    preset file may leave keys to the preset it extends or to ``--set``, so no key is required
    here; ``bioim2im check`` checks a preset whole.
    """
    from pydantic.json_schema import GenerateJsonSchema

    from bioim2im.config.build import preset_model

    class Schema(GenerateJsonSchema):
        def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> Any:
            return {}  # a parameter type JSON Schema cannot say: any value

    model, _ = preset_model(registry)
    schema = model.model_json_schema(schema_generator=Schema)
    schema = _relaxed(schema)
    for keys in shorthand_keys():  # the component's name alone stands for its table
        found = _property(schema, keys)
        if found is not None and "anyOf" in found:
            kind = COMPONENT_KEYS[".".join(keys)]
            found["anyOf"].insert(0, {"type": "string", "enum": registry.names(kind)})
    descriptions = {f"{c.kind.title()}_{c.name}": c.description for c in registry}
    for name, definition in schema.get("$defs", {}).items():
        if descriptions.get(name):
            definition["description"] = descriptions[name]
    schema["properties"] = {
        "extends": {
            "type": "string",
            "description": "A preset this file starts from: a name (`bioim2im presets`) or a "
            "path to a .toml file, relative to this file.",
        },
        **schema["properties"],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "bioim2im preset",
        "description": "A bioim2im preset (TOML). `bioim2im options` describes every key; "
        "`bioim2im check FILE` validates a preset whole.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def _property(schema: dict[str, Any], keys: Sequence[str]) -> dict[str, Any] | None:
    """The schema of the property at ``keys``, following ``$ref`` to the definitions."""
    node: Any = schema
    for key in keys:
        while isinstance(node, dict) and "$ref" in node:
            node = schema.get("$defs", {}).get(node["$ref"].rsplit("/", 1)[-1])
        node = node.get("properties", {}).get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _relaxed(value: Any) -> Any:
    """No key required; component unions matched by any member (a table may leave ``name`` to
    the preset it extends), without OpenAPI's ``discriminator``."""
    if isinstance(value, list):
        return [_relaxed(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in ("properties", "$defs"):  # names of keys and definitions, not keywords
            out[key] = {name: _relaxed(v) for name, v in item.items()}
        elif (key == "required" and isinstance(item, list)) or (
            key == "discriminator" and isinstance(item, dict) and "propertyName" in item
        ):
            continue
        else:
            out["anyOf" if key == "oneOf" else key] = _relaxed(item)
    return out
