"""Preset models specialised to a registry: component fields become discriminated unions."""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Discriminator, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from bioim2im.config.components import (
    component_kind,
    components,
    field_annotation,
    holds_components,
    is_union,
)
from bioim2im.config.schema import ComponentSpec, Preset
from bioim2im.errors import PluginError
from bioim2im.plugin.hookspecs import Values
from bioim2im.plugin.registry import ComponentRegistry, Generated, StrictModel


class SchemaInfo:
    """What the error formatter needs to know about a built schema."""

    def __init__(self) -> None:
        self.kind_of_tags: dict[frozenset[str], str] = {}


def _member(kind: str, name: str, base: type[ComponentSpec], params: type[StrictModel]) -> type:
    """The model of one component: ``base`` fields + ``name = <literal>`` + its parameters."""
    clash = (set(params.model_fields) & set(base.model_fields)) - {"name"}
    if clash:
        raise PluginError(f"{kind} '{name}' has parameters named like preset keys: {sorted(clash)}")
    namespace: dict[str, Any] = {
        "__annotations__": {"name": Literal[name]},
        "__module__": __name__,
        "__doc__": params.__doc__,
        "component_params": frozenset(params.model_fields),
    }
    if params.model_config.get("extra") == "allow":
        namespace["model_config"] = ConfigDict(extra="allow")
    return type(f"{kind.title()}_{name}", (base, params, Generated), namespace)


def _union(
    registry: ComponentRegistry,
    kind: str,
    info: SchemaInfo,
    base: type[ComponentSpec] = ComponentSpec,
) -> Any:
    names = registry.names(kind)
    members = [_member(kind, n, base, registry.get(kind, n).params) for n in names]
    info.kind_of_tags[frozenset(names)] = kind
    if not members:
        return _no_component(kind, base)
    if len(members) == 1:
        return members[0]
    # Discriminator (not Field(discriminator=...)) survives being re-declared on a subclass field.
    return Annotated[Union[tuple(members)], Discriminator("name")]  # noqa: UP007


def _no_component(kind: str, base: type[ComponentSpec]) -> type:
    def refuse(cls: type, value: str) -> str:
        raise ValueError(f"no {kind} components are installed")

    return create_model(
        f"No_{kind}",
        __base__=(base, Generated),
        __validators__={"refuse": field_validator("name")(classmethod(refuse))},  # type: ignore[dict-item]
    )


def _override(base: type[StrictModel], name: str, **fields: Any) -> Any:
    """A subclass of ``base`` whose listed fields get new types, keeping defaults and docs."""
    new_fields = {
        field: (annotation, _copy(base.model_fields[field])) for field, annotation in fields.items()
    }
    return create_model(name, __base__=(base, Generated), __module__=__name__, **new_fields)  # type: ignore[call-overload]


def _copy(field: FieldInfo) -> FieldInfo:
    copied = FieldInfo.merge_field_infos(field)
    copied.annotation = None
    return copied


@functools.lru_cache(maxsize=8)
def preset_model(registry: ComponentRegistry) -> tuple[type[Preset], SchemaInfo]:
    """The Preset model for this registry (cached per registry): every field the schema marks
    as a component (see :mod:`bioim2im.config.components`) becomes the union of the registered
    components of its kind, in every section that holds one."""
    info = SchemaInfo()

    def components_fit(preset: Preset) -> Preset:
        _check_layout(preset, registry)
        _check_components(preset, registry)
        return preset

    bases: tuple[Any, ...] = (_specialise_model(Preset, registry, info), Generated)
    preset: type[Preset] = create_model(
        "Preset",
        __base__=bases,
        __module__=__name__,
        __validators__={"components_fit": model_validator(mode="after")(components_fit)},  # type: ignore[dict-item]
    )
    return preset, info


def _specialise_model(
    model: type[StrictModel], registry: ComponentRegistry, info: SchemaInfo
) -> Any:
    """A subclass of ``model`` whose fields holding components take the registered ones."""
    fields = {
        name: _specialise(field_annotation(model, name), registry, info)
        for name in model.model_fields
        if holds_components(field_annotation(model, name))
    }
    return _override(model, model.__name__, **fields)


def _specialise(annotation: Any, registry: ComponentRegistry, info: SchemaInfo) -> Any:
    kind = component_kind(annotation)
    if kind is not None:
        base = typing.get_args(annotation)[0]
        if holds_components(base):  # a head: its table holds more components
            base = _specialise_model(base, registry, info)
        return _union(registry, kind, info, base=base)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if is_union(annotation):
        return Union[tuple(_specialise(a, registry, info) for a in args)]  # noqa: UP007
    if origin is list:
        return list[_specialise(args[0], registry, info)]  # type: ignore[misc]
    if origin is dict:
        return dict[args[0], _specialise(args[1], registry, info)]  # type: ignore[misc,valid-type]
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return _specialise_model(annotation, registry, info)
    return annotation


def _check_layout(preset: Preset, registry: ComponentRegistry) -> None:
    """The data layout's rules over the whole preset (its ``check_preset`` extra), which may
    also fill in what the preset leaves to the layout (a head's channels)."""
    layout = preset.data.layout
    check_preset = registry.get("layout", layout.name).extras.get("check_preset")
    if check_preset is not None:
        check_preset(preset, layout.params())


def _check_components(preset: Preset, registry: ComponentRegistry) -> None:
    """Rules that need to know the components: each component's own ``check``, sizes a
    backbone accepts, 3D-only heads, the output channels a head has or a loss is trained
    against."""
    for key, kind, spec in ((c.key, c.kind, c.spec) for c in components(preset)):
        params = spec.params()
        try:
            registry.get(kind, spec.name).check(params, preset.spatial_dims)
        except ValueError as exc:
            message = str(exc)
            first, _, rest = message.partition(" ")
            if first in params:  # the message is about one parameter: name its key
                raise ValueError(f"{key}.{first}: {rest}") from None
            raise ValueError(f"{key} ({kind} '{spec.name}'): {message}") from None
    backbone = preset.model.backbone
    divisor = divisors(registry, backbone, preset.spatial_dims)
    for key, size in (
        ("data.patch_size", preset.data.patch_size),
        ("predict.roi_size", preset.predict.roi_size),
    ):
        if size is not None and any(s % d for s, d in zip(size, divisor, strict=True)):
            fixed = [-(-s // d) * d for s, d in zip(size, divisor, strict=True)]
            along = (
                f"{divisor[0]} along every axis"
                if len(set(divisor)) == 1
                else f"{list(divisor)} along (Z)YX"
            )
            raise ValueError(
                f"{key} {size} must be divisible by {along} for backbone "
                f"'{backbone.name}' with these parameters; try {fixed}"
            )
    input_size_of = registry.get("backbone", backbone.name).extras.get("input_size")
    if input_size_of is not None:
        fixed_size = [int(n) for n in input_size_of(backbone.params())]
        for key, size in (
            ("data.patch_size", preset.data.patch_size),
            ("predict.roi_size", preset.predict.roi_size),
        ):
            if size is not None and list(size) != fixed_size:
                raise ValueError(
                    f"{key} {size} must equal {fixed_size}, the only input size backbone "
                    f"'{backbone.name}' with these parameters accepts"
                )
    for head_name, head in preset.model.heads.items():
        channels_of = registry.get("loss", head.loss.name).extras.get("out_channels")
        if channels_of is not None and head.out_channels != channels_of(preset.spatial_dims):
            raise ValueError(
                f"model.heads.{head_name}: loss '{head.loss.name}' is trained against "
                f"{channels_of(preset.spatial_dims)} channels in {preset.spatial_dims}D; set "
                f"out_channels = {channels_of(preset.spatial_dims)}"
            )
        has = registry.get("head", head.name).extras.get("out_channels")
        if has is not None and head.out_channels != has(preset.spatial_dims):
            raise ValueError(
                f"model.heads.{head_name}: head '{head.name}' has {has(preset.spatial_dims)} "
                f"output channels in {preset.spatial_dims}D; set "
                f"out_channels = {has(preset.spatial_dims)}"
            )
        for kind, component in (("loss", head.loss.name), ("head", head.name)):
            declared = registry.get(kind, component).extras.get("directions")
            found = declared(preset.spatial_dims) if declared is not None else {}
            beyond = sorted(c for c, a in found.items() if c >= head.out_channels)
            if beyond or any(not 0 <= a < preset.spatial_dims for a in found.values()):
                raise ValueError(
                    f"model.heads.{head_name}: {kind} '{component}' makes channels "
                    f"{sorted(found)} vector components along axes {sorted(set(found.values()))}, "
                    f"but the head has {head.out_channels} output channels in "
                    f"{preset.spatial_dims}D"
                )
        needs = registry.get("head", head.name).extras.get("spatial_dims")
        if needs is not None and preset.spatial_dims not in needs:
            raise ValueError(
                f"model.heads.{head_name}: head '{head.name}' needs {' or '.join(map(str, needs))}D "
                f"input but data.patch_size is {preset.spatial_dims}D"
            )
        _check_chain(head_name, head, preset.spatial_dims, registry)


def _check_chain(name: str, head: Any, dims: int, registry: ComponentRegistry) -> None:
    """Follow the head's postprocessing from its raw output with what each step declares it
    takes and gives (the ``values`` extra); refuse the first step given maps it cannot take."""
    output_dims = registry.get("head", head.name).extras.get("output_spatial_dims") or dims
    values = Values(head.out_channels, "float")
    source = f"head '{name}'"
    for index, step in enumerate(head.postprocess):
        gives = registry.get("postprocessor", step.name).extras.get("values")
        if gives is None:  # a step that declares nothing: what follows it is unknown
            return
        try:
            values = gives(values, spatial_dims=output_dims, **step.params())
        except ValueError as exc:
            raise ValueError(
                f"model.heads.{name}.postprocess[{index}] = {_written(step)} receives "
                f"{values.describe()} from {source}: {exc}"
            ) from None
        source = step.name


def _written(step: Any) -> str:
    """A postprocessing step as the preset writes it: its name and the parameters it sets."""
    import json

    params = step.params()
    shown = [f"name = {json.dumps(step.name)}"] + [
        f"{key} = {json.dumps(params[key])}" for key in sorted(step.model_fields_set & set(params))
    ]
    return "{" + ", ".join(shown) + "}"


def divisors(
    registry: ComponentRegistry, backbone: ComponentSpec, spatial_dims: int
) -> tuple[int, ...]:
    """What every input size of ``backbone`` must be a multiple of, per spatial axis (its
    ``divisor`` extra gives one number, or one per axis for per-axis strides; 1 without it)."""
    divisor_of = registry.get("backbone", backbone.name).extras.get("divisor")
    found = divisor_of(backbone.params()) if divisor_of is not None else 1
    if isinstance(found, int):
        return (int(found),) * spatial_dims
    found = tuple(int(v) for v in found)
    if len(found) != spatial_dims:
        raise ValueError(
            f"model.backbone ({backbone.name}) downsamples {len(found)} axes but data.patch_size "
            f"has {spatial_dims}"
        )
    return found
