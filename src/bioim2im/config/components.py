"""Where components sit in a preset, said once: the schema marks each component field with its
kind, and :func:`components` walks a preset along those marks.

A component field of the schema is annotated ``Annotated[ComponentSpec, Component("loss")]``
(or a list, an optional, or a dict of such; a head is a component whose table holds more
components). Everything that needs the places where components sit asks this module: the
schema's registry-specific unions (:mod:`bioim2im.config.build`), the rules checked against
each component, the package versions a checkpoint records, and ``bioim2im list-plugins``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bioim2im.config.schema import Component, Preset


@dataclass(frozen=True)
class UsedComponent:
    """A component a preset names: where (``model.heads.seg.postprocess.0``), its kind, and the
    table naming it (``spec.name``, ``spec.params()``)."""

    key: str
    kind: str
    spec: Any


def component_mark(annotation: Any) -> Component | None:
    """The mark of an ``Annotated[..., Component(kind)]`` annotation, or None."""
    if typing.get_origin(annotation) is typing.Annotated:
        marks = [m for m in annotation.__metadata__ if isinstance(m, Component)]
        return marks[0] if marks else None
    return None


def component_kind(annotation: Any) -> str | None:
    """The kind an ``Annotated[..., Component(kind)]`` annotation marks, or None."""
    mark = component_mark(annotation)
    return mark.kind if mark is not None else None


def field_annotation(model: type[BaseModel], name: str) -> Any:
    """A field's annotation with the marks pydantic moved into its metadata put back."""
    info = model.model_fields[name]
    marks = [m for m in info.metadata if isinstance(m, Component)]
    return typing.Annotated[(info.annotation, *marks)] if marks else info.annotation


def is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def holds_components(annotation: Any) -> bool:
    """Whether a component mark occurs anywhere in ``annotation`` (also inside sections)."""
    if component_kind(annotation) is not None:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(
            holds_components(field_annotation(annotation, name)) for name in annotation.model_fields
        )
    return any(holds_components(arg) for arg in typing.get_args(annotation))


def components(preset: Any) -> list[UsedComponent]:
    """Every component ``preset`` names, in the order of the schema's fields."""
    return list(_walk(Preset, preset, ""))


def component_keys() -> dict[str, str]:
    """Every preset key that names a component (a list of them, for ``data.augment``; one per
    head, for ``model.heads.<name>``), with the kind it names."""
    return dict(_places(Preset, ""))


def shorthand_keys() -> list[tuple[str, ...]]:
    """The preset keys (as key paths) of single component fields where a plain string stands
    for ``{ name = "..." }``: ``("data", "layout")``."""
    return [tuple(key.split(".")) for key in _shorthand_places(Preset, "")]


def kind_keys(kind: str) -> list[str]:
    """The preset keys where a component of ``kind`` may be named, e.g. ``data.augment``,
    ``model.heads.<name>.loss``."""
    return [key for key, found in component_keys().items() if found == kind]


def _walk(model: type[BaseModel], value: Any, prefix: str) -> Iterator[UsedComponent]:
    for name in model.model_fields:
        key = f"{prefix}{name}"
        yield from _walk_value(field_annotation(model, name), getattr(value, name), key)
    implied = getattr(value, "implied_components", None)
    if implied is not None:  # components a shorthand stands for (logging.tensorboard)
        for key, kind, spec in implied():
            yield UsedComponent(f"{prefix}{key}", kind, spec)


def _walk_value(annotation: Any, value: Any, key: str) -> Iterator[UsedComponent]:
    if value is None or not holds_components(annotation):
        return
    kind = component_kind(annotation)
    if kind is not None:
        yield UsedComponent(key, kind, value)
        inner = typing.get_args(annotation)[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel) and holds_components(inner):
            yield from _walk(inner, value, f"{key}.")  # a head's loss, postprocessing...
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if is_union(annotation):
        for arg in args:
            if arg is not type(None):
                yield from _walk_value(arg, value, key)
    elif origin is list:
        for i, item in enumerate(value):
            yield from _walk_value(args[0], item, f"{key}.{i}")
    elif origin is dict:
        for name, item in value.items():
            yield from _walk_value(args[1], item, f"{key}.{name}")
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _walk(annotation, value, f"{key}.")


def _places(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str]]:
    for name in model.model_fields:
        yield from _annotation_places(field_annotation(model, name), f"{prefix}{name}")


def _annotation_places(annotation: Any, key: str) -> Iterator[tuple[str, str]]:
    if not holds_components(annotation):
        return
    kind = component_kind(annotation)
    if kind is not None:
        yield key, kind
        inner = typing.get_args(annotation)[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from _places(inner, f"{key}.")
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if is_union(annotation):
        for arg in args:
            yield from _annotation_places(arg, key)
    elif origin is list:
        yield from _annotation_places(args[0], key)
    elif origin is dict:
        yield from _annotation_places(args[1], f"{key}.<name>")
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _places(annotation, f"{key}.")


def _shorthand_places(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name in model.model_fields:
        annotation, key = field_annotation(model, name), f"{prefix}{name}"
        mark = component_mark(annotation)
        if mark is not None and mark.shorthand:
            yield key
        members = typing.get_args(annotation) if is_union(annotation) else (annotation,)
        for member in members:
            if mark is None and isinstance(member, type) and issubclass(member, BaseModel):
                yield from _shorthand_places(member, f"{key}.")
