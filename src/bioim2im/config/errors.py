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
    errors = exc.errors(include_url=False)
    walks = [_walk(model, data, error["loc"]) for error in errors]
    # Errors of a union's alternatives the value was not written as are left out, unless
    # nothing else is left to say.
    keep_all = all(walked is None for walked in walks)
    for error, walked in zip(errors, walks, strict=True):
        if walked is None:
            if not keep_all:
                continue
            walked = _walk(model, data, error["loc"], keep_alternatives=True)
            assert walked is not None
        keys, parent = walked
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


def _walk(
    model: Any, data: Any, loc: tuple[Any, ...], *, keep_alternatives: bool = False
) -> tuple[list[Any], type[BaseModel] | None] | None:
    """The user's key path for a pydantic ``loc`` and the model that holds its last key; None
    for an error of a union's alternative the value was not written as.

    Pydantic puts a discriminated union's tag (the component name) and the names of a plain
    union's alternatives (``float``, ``list[float]``) into ``loc``; the user never wrote those
    levels, so they are dropped here.
    """
    keys: list[Any] = []
    annotation: Any = model
    parent: type[BaseModel] | None = None
    for step in loc:
        alternatives = _alternatives(annotation)
        if isinstance(step, str) and not isinstance(data, dict) and len(alternatives) > 1:
            written_as_list = isinstance(data, (list, tuple))
            other_shape = written_as_list != step.startswith(("list[", "tuple[", "set["))
            if other_shape and not keep_alternatives:
                return None
            annotation = _member_named(alternatives, step)
            continue
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


def _alternatives(annotation: Any) -> list[Any]:
    """The members of a plain union (Annotated and None left out); [] for anything else."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    return [a for a in typing.get_args(annotation) if a is not type(None)]


def _member_named(members: list[Any], tag: str) -> Any:
    """The alternative of a union that pydantic's ``loc`` calls ``tag`` (e.g. ``list[float]``)."""
    for member in members:
        name = getattr(member, "__name__", None) if typing.get_origin(member) is None else None
        if tag in (name, str(member).replace("typing.", "")):
            return member
    return Any
