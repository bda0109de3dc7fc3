"""Presets and components, looked up without training: :func:`load_preset`, :func:`check`,
:func:`presets`, :func:`show_preset`, :func:`options`, :func:`schema`, :func:`list_plugins`.

Everything here is light: the registry and the preset schema, no torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from bioim2im.api.options import Arg, Opt, Overrides
from bioim2im.errors import UserError
from bioim2im.plugin.hookspecs import KIND_NAMES

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

    from bioim2im.config import Preset


def load_preset(preset: str | Path, *, overrides: Sequence[str] = ()) -> Preset:
    """Read, resolve (``extends``, then ``overrides`` such as ``"train.steps=500"``) and
    validate a preset; a :class:`~bioim2im.errors.UserError` lists every problem."""
    from bioim2im.config import load_preset as load

    return load(preset, overrides)


def list_presets() -> list[dict[str, str]]:
    """Every preset that can be named (shipped and from installed plugins), as ``bioim2im
    presets`` lists them: ``name``, ``description``, ``package``, ``version`` and ``path``."""
    from bioim2im.config.reference import preset_rows
    from bioim2im.plugin.manager import get_registry

    return preset_rows(get_registry())


@dataclass
class PresetList:
    """The presets that can be named."""

    rows: list[dict[str, str]]

    def to_json(self) -> list[dict[str, str]]:
        return self.rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.table import Table

        table = Table("name", "description", "package", box=None, header_style="bold")
        for row in self.rows:
            table.add_row(row["name"], row["description"], f"{row['package']} {row['version']}")
        yield table


def presets() -> PresetList:
    """List every preset by name with its description and the package that provides it;
    `bioim2im presets show NAME` prints one resolved."""
    return PresetList(list_presets())


@dataclass
class Text:
    """Text a command prints to standard output as it is (a preset, a schema)."""

    text: str

    def stdout_text(self) -> str:
        return self.text


def show_preset(
    name: Annotated[str, Arg("A preset's name.")],
    *,
    overrides: Overrides = (),
    as_written: Annotated[bool, Opt("The file as it is, not resolved (extends kept).")] = False,
) -> Text:
    """Print a preset resolved (its extends merged, every default filled in): save it, change
    it, and train it by path."""
    from bioim2im.config.reference import show_preset as show
    from bioim2im.plugin.manager import get_registry

    return Text(show(name, get_registry(), overrides, as_written=as_written))


@dataclass
class CheckResult:
    """A preset resolved and, with ``data``, what was found in its dataset."""

    source: str
    preset: Preset
    report: Any = None
    """The dataset report (``check --data``), else None."""
    error: UserError | None = None
    """The dataset's problems, raised after the report is shown."""

    def stdout_text(self) -> str:
        from bioim2im.config import to_toml

        return "" if self.error is not None else to_toml(self.preset)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.report is not None:
            yield self.report
        if self.error is None:
            yield f"[green]✓[/] {self.source} is valid"


def check(
    preset: Annotated[str, Arg("A preset TOML file or a preset's name.")],
    *,
    overrides: Overrides = (),
    data: Annotated[bool, Opt("Also scan the dataset the preset names.")] = False,
) -> CheckResult:
    """Validate a preset without training and print it fully resolved (exit 0 valid, 2 not)."""
    from bioim2im.config import load_preset as load

    resolved = load(preset, overrides)
    result = CheckResult(str(preset), resolved)
    if data:
        from bioim2im.data.preflight import ensure_usable, preflight

        result.report = preflight(resolved)
        try:
            ensure_usable(result.report)
        except UserError as exc:
            result.error = exc
    return result


@dataclass
class OptionList:
    """Preset keys (and, for a key naming a component, each registered one's parameters)."""

    options: list[Any]
    kind: str | None = None
    components: list[Any] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        from bioim2im.config.reference import parameter_options

        return {
            "options": [o.to_json() for o in self.options],
            "components": [
                {
                    "kind": c.kind,
                    "name": c.name,
                    "package": c.package,
                    "description": c.description,
                    "params": [o.to_json() for o in parameter_options(c)],
                }
                for c in self.components
            ],
        }

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text as RichText

        from bioim2im.config.reference import parameter_options

        for option in self.options:
            yield RichText(_option_line(option))
        if self.components:
            yield RichText.from_markup(f"\n[bold]Each {self.kind} and its parameters:[/]")
        for component in self.components:
            yield from _component_lines(component, parameter_options(component))


def options(
    section: Annotated[
        str | None,
        Arg(
            "Only the keys under this one, e.g. train, data.layout, model.heads.seg.loss; a key "
            "naming a component (model.backbone) also lists each one's parameters.",
            metavar="SECTION",
        ),
    ] = None,
) -> OptionList:
    """Every preset key with its type, default and meaning, from the schema itself."""
    from bioim2im.config.reference import find_options
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    found = find_options(registry, section)
    # A key naming a component: each registered one of that kind, with its parameters.
    kinds = [o.kind for o in found if o.kind is not None and section is not None]
    kind = kinds[0] if len(found) == 1 and kinds else None
    return OptionList(found, kind, [c for c in registry if c.kind == kind])


@dataclass
class SchemaResult:
    """The JSON Schema of preset files, printed or written to ``path``."""

    text: str
    path: Path | None = None

    def stdout_text(self) -> str:
        return self.text if self.path is None else ""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.path is not None:
            yield f"[green]✓[/] {self.path}"


def schema(
    output: Annotated[
        str | Path | None, Opt("Write it to this file (default: print it).", ("--output", "-o"))
    ] = None,
    *,
    overwrite: Annotated[bool, Opt("Replace an existing file.")] = False,
) -> SchemaResult:
    """A JSON Schema of preset files, with every installed component, for editors: save it and
    start a preset with the line  #:schema ./bioim2im-preset.schema.json"""
    from bioim2im.config.reference import json_schema
    from bioim2im.plugin.manager import get_registry

    text = json.dumps(json_schema(get_registry()), indent=2) + "\n"
    if output is None:
        return SchemaResult(text)
    path = Path(output)
    if path.is_dir():
        raise UserError(
            f"--output {path} is a directory; give a file name, e.g. "
            f"{path}/bioim2im-preset.schema.json"
        )
    from bioim2im.io.atomic import check_output_file, write_text

    check_output_file(path, "--output", overwrite=overwrite)
    write_text(path, text)
    return SchemaResult(text, path)


@dataclass
class ComponentList:
    """Registered components: kind, name, package, version, description (and parameters)."""

    components: list[Any]
    params: bool = False
    kind: str | None = None

    def to_json(self) -> list[dict[str, Any]]:
        from bioim2im.config.components import kind_keys
        from bioim2im.config.reference import parameter_options

        rows = []
        for c in self.components:
            row: dict[str, Any] = {
                "kind": c.kind,
                "name": c.name,
                "package": c.package,
                "version": c.version,
                "description": c.description,
            }
            if self.params:
                row["params"] = [o.to_json() for o in parameter_options(c)]
                row["keys"] = kind_keys(c.kind)
            rows.append(row)
        return rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.table import Table
        from rich.text import Text as RichText

        from bioim2im.config.components import kind_keys
        from bioim2im.config.reference import parameter_options

        if self.params:
            for component in self.components:
                yield from _component_lines(component, parameter_options(component))
            return
        table = Table(
            "kind", "name", "package", "version", "description", box=None, header_style="bold"
        )
        for c in self.components:
            table.add_row(c.kind, c.name, c.package, c.version, c.description)
        yield table
        keys = kind_keys(self.kind) if self.kind is not None else []
        if keys:
            yield RichText(f"a {self.kind} is named at: {', '.join(keys)}")


def list_plugins(
    *,
    kind: Annotated[
        str | None, Opt(f"Only this kind: {', '.join(KIND_NAMES)}.", ("--kind", "-k"))
    ] = None,
    params: Annotated[
        bool, Opt("Also each component's parameters: type, default, meaning.")
    ] = False,
) -> ComponentList:
    """List every registered component with the package that provides it."""
    from bioim2im.plugin.manager import get_registry
    from bioim2im.plugin.registry import suggest

    if kind is not None and kind not in KIND_NAMES:
        raise UserError(
            f"--kind {kind!r} is not a component kind{suggest(kind, KIND_NAMES)} "
            f"(valid: {', '.join(KIND_NAMES)})"
        )
    chosen = [c for c in get_registry() if kind is None or c.kind == kind]
    return ComponentList(chosen, params, kind)


def _component_lines(component: Any, options: list[Any]) -> RenderResult:
    from rich.markup import escape
    from rich.text import Text as RichText

    yield RichText.from_markup(
        f"[bold]{component.kind} {escape(component.name)}[/] ({component.package} "
        f"{component.version}): {escape(component.description)}"
    )
    if not options:
        yield RichText("    no parameters")
    for option in options:
        yield RichText(f"    {_option_line(option)}")


def _option_line(option: Any) -> str:
    default = f" = {option.default}" if option.default else ""
    described = f"\n        {option.description}" if option.description else ""
    return f"{option.key}: {option.type}{default}{described}"
