"""What a user can look up without reading the source: the presets by name, every preset key
with its type, default and description, and a JSON Schema of preset files for editors.

All of it is built from the live registry, so the components and presets of installed plugins
are included.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bioim2im.errors import UserError
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
