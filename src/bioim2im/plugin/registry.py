"""ComponentRegistry: name -> factory, parameter model, description and providing package."""

from __future__ import annotations

import difflib
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from bioim2im.errors import PluginError, UserError
from bioim2im.plugin.hookspecs import KIND_NAMES, KIND_OF, WITHOUT_PARAMETERS


class StrictModel(BaseModel):
    """Base of every preset section and every component's parameters: unknown keys are errors,
    and a number is a number (``true`` or ``"5"`` where a number is expected are refused, which
    pydantic would otherwise read as 1 and 5)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        use_attribute_docstrings=True,
        validate_default=True,
        arbitrary_types_allowed=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        checked = dict(data)
        for key, value in data.items():
            field = cls.model_fields.get(key)
            if field is not None and key != "name":
                checked[key] = _refuse_non_numbers(field.annotation, value)
        return checked


class Generated(StrictModel):
    """Mixed into the models built from code (a component's signature, the schema's unions of
    registered components): their descriptions are given or copied, and pydantic's search for
    attribute docstrings in the source of a class made at run time walks the call stack and
    tokenizes modules each time: 0.6 s of every command's start for ~190 models."""

    model_config = ConfigDict(use_attribute_docstrings=False)


class _NotANumber:
    """A boolean or text given where only numbers are accepted: fails the field's validation
    with the value shown as written."""

    def __init__(self, value: bool | str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return str(self.value).lower() if isinstance(self.value, bool) else repr(self.value)


def _refuse_non_numbers(annotation: Any, value: Any) -> Any:
    """``value`` with each boolean or text (also inside lists) wrapped in :class:`_NotANumber`
    where ``annotation`` expects numbers there and no boolean or text."""
    members = _members(annotation)
    if isinstance(value, (list, tuple)):
        items = [
            a
            for m in members
            if typing.get_origin(m) in (list, tuple, set, frozenset)
            for a in typing.get_args(m)
            if a is not Ellipsis
        ]
        item_type = typing.Union[tuple(items)] if items else Any  # noqa: UP007
        return [_refuse_non_numbers(item_type, item) for item in value]
    if not isinstance(value, (bool, str)):
        return value
    scalars = {m for m in members if typing.get_origin(m) is None}
    literals = [
        v for m in members if typing.get_origin(m) is typing.Literal for v in typing.get_args(m)
    ]
    if Any in scalars or not scalars & {int, float}:
        return value
    if isinstance(value, bool):
        accepted = bool in scalars or any(v is value for v in literals)
    else:
        accepted = bool(scalars & {str, Path}) or value in literals
    return value if accepted else _NotANumber(value)


def _members(annotation: Any) -> list[Any]:
    """The alternatives of an annotation, Annotated and Optional unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [] if annotation is type(None) else [annotation]


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _resolve_annotation(annotation: Any, globalns: dict[str, Any]) -> Any:
    if isinstance(annotation, str):
        try:
            return eval(annotation, dict(globalns), {"typing": typing})
        except Exception:
            return Any
    return annotation


def argument_docs(docstring: str) -> dict[str, str]:
    """Each parameter's description from the ``Args:`` section of a (Google-style) docstring::

    Args:
        threshold: Probability above which a voxel is foreground.
        min_size: Objects smaller than this many voxels are removed;
            continued lines are indented further.
    """
    docs: dict[str, str] = {}
    lines = docstring.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() in ("Args:", "Arguments:"))
    except StopIteration:
        return docs
    indent: int | None = None
    current = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        name, colon, text = line.strip().partition(":")
        if depth == indent and colon and name.split(" ")[0].isidentifier():
            current = name.split(" ")[0]
            docs[current] = text.strip()
        elif current is not None:
            docs[current] = f"{docs[current]} {line.strip()}".strip()
    return docs


def params_model_from_signature(
    factory: Callable[..., Any], kind: str, label: str
) -> type[StrictModel]:
    """A strict pydantic model of a factory's keyword parameters, structural ones left out.

    Each parameter's type hint becomes the field type and its default the field default;
    parameters without a default are required. A factory with ``**kwargs`` accepts extra keys.
    """
    signature = inspect.signature(factory)
    globalns = getattr(factory, "__globals__", {})
    documented = argument_docs(inspect.getdoc(factory) or "")
    fields: dict[str, Any] = {}
    extra_allowed = False
    for pname, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra_allowed = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL or pname in KIND_OF[kind].structural:
            continue
        if pname == "name":
            raise PluginError(f"{label}: a component parameter may not be called 'name'")
        annotation = _resolve_annotation(param.annotation, globalns)
        if annotation is inspect.Parameter.empty:
            annotation = Any
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, Field(default, description=documented.get(pname)))
    model_name = "Params_" + "".join(c if c.isalnum() else "_" for c in label)
    model: type[StrictModel] = create_model(model_name, __base__=Generated, **fields)
    if extra_allowed:
        model = type(model_name, (model,), {"model_config": ConfigDict(extra="allow")})
    model.__doc__ = f"Parameters of {label}."
    return model


@dataclass
class Component:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any] | str
    description: str
    package: str
    version: str
    extras: Mapping[str, Any] = field(default_factory=dict)
    _params: type[StrictModel] | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} '{self.name}'"

    def load(self) -> Any:
        """The factory itself, importing it first when it was given as ``"module:attr"``."""
        if isinstance(self.factory, str):
            module_name, _, attr = self.factory.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                raise PluginError(
                    f"{self.label} from package '{self.package}' points at '{self.factory}', "
                    f"which cannot be imported: {exc}"
                ) from exc
            self.factory = obj
        return self.factory

    @property
    def params(self) -> type[StrictModel]:
        """The pydantic model of this component's user-facing parameters."""
        if self._params is None:
            self._params = params_model_from_signature(self.load(), self.kind, self.label)
        return self._params

    def check(self, params: Mapping[str, Any], spatial_dims: int | None = None) -> None:
        """Run the component's ``check`` extra (ValueError for parameters it cannot be built
        with); nothing when it has none."""
        check = self.extras.get("check")
        if check is not None:
            check(spatial_dims=spatial_dims, **params)

    def build(self, params: Mapping[str, Any] | None = None, **structural: Any) -> Any:
        """Call the factory with validated parameters and the structural arguments it accepts."""
        factory = self.load()
        if self.kind in WITHOUT_PARAMETERS:
            return factory
        try:
            values = self.params.model_validate(dict(params or {})).model_dump()
        except ValidationError as exc:
            problems = [
                f"{'.'.join(map(str, e['loc'])) or 'parameters'}: "
                + str(e["msg"]).removeprefix("Value error, ")
                for e in exc.errors(include_url=False)
            ]
            raise UserError(f"{self.label} cannot be built:", problems) from None
        try:
            self.check(values, structural.get("spatial_dims"))
        except ValueError as exc:
            raise UserError(f"{self.label}: {exc}") from None
        accepted = inspect.signature(factory).parameters
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        extra = {k: v for k, v in structural.items() if takes_kwargs or k in accepted}
        return factory(**values, **extra)


class Registrar:
    """What a hook receives: adds components of one kind on behalf of one distribution (the
    :class:`bioim2im.plugin.hookspecs.Registrar` of the plugin contract)."""

    def __init__(self, registry: ComponentRegistry, kind: str, package: str, version: str) -> None:
        self._registry = registry
        self.kind = kind
        self.package = package
        self.version = version

    def add(
        self,
        name: str,
        factory: Callable[..., Any] | str | Any,
        description: str | None = None,
        *,
        params: type[StrictModel] | None = None,
        **extras: Any,
    ) -> None:
        unknown = sorted(set(extras) - set(KIND_OF[self.kind].extras))
        if unknown:
            known = ", ".join(KIND_OF[self.kind].extras) or "none"
            raise PluginError(
                f"package '{self.package}' registers {self.kind} '{name}' with unknown extras "
                f"{unknown} (a {self.kind} has: {known}; see bioim2im.plugin.hookspecs)"
            )
        if description is None:
            doc = inspect.getdoc(factory) if callable(factory) else None
            description = (doc or "").strip().splitlines()[0] if doc else ""
        self._registry.add(
            Component(
                kind=self.kind,
                name=name,
                factory=factory,
                description=description,
                package=self.package,
                version=self.version,
                extras=extras,
                _params=params,
            )
        )


class ComponentRegistry:
    """Every component every plugin registered, by kind and name."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KIND_NAMES}

    def add(self, component: Component) -> None:
        if component.kind not in self._components:
            raise PluginError(
                f"unknown component kind '{component.kind}'; valid: {', '.join(KIND_NAMES)}"
            )
        if not component.name or not all(c.isalnum() or c in "_-." for c in component.name):
            raise PluginError(
                f"package '{component.package}' registers {component.kind} {component.name!r}: "
                "names use letters, digits, '_', '-' and '.'"
            )
        existing = self._components[component.kind].get(component.name)
        if existing is not None:
            raise PluginError(
                f"{component.label} is registered twice: by package '{existing.package}' and by "
                f"package '{component.package}'. Uninstall one of them, or restrict loading with "
                "BIOIM2IM_PLUGINS=pkg1,pkg2."
            )
        self._components[component.kind][component.name] = component

    def get(self, kind: str, name: str) -> Component:
        try:
            return self._components[kind][name]
        except KeyError:
            names = self.names(kind)
            raise UserError(
                f"unknown {kind} '{name}'{suggest(name, names)} (valid: {', '.join(names) or 'none'})"
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        return name in self._components.get(kind, {})

    def __iter__(self) -> Iterator[Component]:
        for kind in KIND_NAMES:
            yield from (self._components[kind][name] for name in self.names(kind))

    def build(self, kind: str, spec: Any, **structural: Any) -> Any:
        """Build a component from a preset spec (an object with ``name`` and ``params()``)."""
        return self.get(kind, spec.name).build(spec.params(), **structural)
