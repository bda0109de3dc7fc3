"""Turning pydantic's validation errors into one readable line per problem."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from bioim2im.plugin.registry import suggest


def format_validation_errors(
    exc: ValidationError, data: dict[str, Any], model: type[BaseModel], info: Any
) -> list[str]:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        keys, parent = _walk(model, data, error["loc"])
        if error["type"] == "union_tag_invalid":
            keys.append("name")
        message = _message(error, keys, parent, info)
        # Rules spanning sections name their keys in the message itself.
        problem = f"{'.'.join(map(str, keys))}: {message}" if keys else message
        if problem not in problems:
            problems.append(problem)
    return problems


def _message(error: Any, keys: list[Any], parent: type[BaseModel] | None, info: Any) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        valid = sorted(parent.model_fields) if parent else []
        hint = suggest(str(keys[-1]), valid)
        return f"unknown key{hint}" + (
            f" (valid: {', '.join(valid)})" if not hint and valid else ""
        )
    if kind == "union_tag_invalid":
        return _unknown_component(ctx.get("tag"), ctx, info)
    if kind == "literal_error" and keys and keys[-1] == "name":  # a kind with one component
        return _unknown_component(value, ctx, info)
    if kind == "union_tag_not_found":
        return "a component table needs `name`, the registered component to use"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not isinstance(value, (dict, list)) and not kind.startswith(("value_error", "assertion")):
        message += f", got {value!r}"
    return message


def _unknown_component(tag: Any, ctx: dict[str, Any], info: Any) -> str:
    expected = ctx.get("expected_tags") or ctx.get("expected") or ""
    names = [
        t.strip().strip("'") for t in str(expected).replace(" or ", ", ").split(",") if t.strip()
    ]
    kind = info.kind_of_tags.get(frozenset(names), "component")
    return f"unknown {kind} {str(tag)!r}{suggest(str(tag), names)} (valid: {', '.join(names)})"


def _walk(model: Any, data: Any, loc: tuple[Any, ...]) -> tuple[list[Any], type[BaseModel] | None]:
    """The user's key path for a pydantic ``loc`` and the model that holds its last key.

    Pydantic puts a discriminated union's tag (the component name) into ``loc``; the user never
    wrote that level, so it is dropped here.
    """
    keys: list[Any] = []
    annotation: Any = model
    parent: type[BaseModel] | None = None
    for step in loc:
        annotation = _choose(annotation, data)
        if isinstance(data, dict) and step not in data and data.get("name") == step:
            continue  # the union tag
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            parent = annotation
            field = annotation.model_fields.get(str(step))
            annotation = field.annotation if field else None
        else:
            args = typing.get_args(annotation)
            annotation = args[-1] if args else None
        keys.append(step)
        data = (
            data.get(step)
            if isinstance(data, dict)
            else (
                data[step]
                if isinstance(data, list) and isinstance(step, int) and step < len(data)
                else None
            )
        )
    return keys, parent


def _choose(annotation: Any, data: Any) -> Any:
    """Unwrap Annotated/Optional and pick the union member whose `name` matches the data."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            named = [
                m
                for m in members
                if isinstance(data, dict)
                and isinstance(m, type)
                and issubclass(m, BaseModel)
                and _literal_name(m) == data.get("name")
            ]
            annotation = named[0] if named else members[0]
            if not named and len(members) > 1:
                return annotation
        else:
            return annotation


def _literal_name(member: type[BaseModel]) -> Any:
    field = member.model_fields.get("name")
    args = typing.get_args(field.annotation) if field else ()
    return args[0] if args else None
