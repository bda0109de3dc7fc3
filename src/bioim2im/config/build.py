"""Preset models specialised to a registry: component fields become discriminated unions."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import ConfigDict, Discriminator, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from bioim2im.config.schema import (
    AdversarialConfig,
    ComponentSpec,
    DataConfig,
    HeadConfig,
    LoggingConfig,
    ModelConfig,
    Preset,
    TrainConfig,
)
from bioim2im.errors import PluginError
from bioim2im.plugin.hookspecs import Values
from bioim2im.plugin.registry import ComponentRegistry, StrictModel


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
    return type(f"{kind.title()}_{name}", (base, params), namespace)


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
        __base__=base,
        __validators__={"refuse": field_validator("name")(classmethod(refuse))},  # type: ignore[dict-item]
    )


def _override(base: type[StrictModel], name: str, **fields: Any) -> Any:
    """A subclass of ``base`` whose listed fields get new types, keeping defaults and docs."""
    new_fields = {
        field: (annotation, _copy(base.model_fields[field])) for field, annotation in fields.items()
    }
    return create_model(name, __base__=base, __module__=__name__, **new_fields)  # type: ignore[call-overload]


def _copy(field: FieldInfo) -> FieldInfo:
    copied = FieldInfo.merge_field_infos(field)
    copied.annotation = None
    return copied


@functools.lru_cache(maxsize=8)
def preset_model(registry: ComponentRegistry) -> tuple[type[Preset], SchemaInfo]:
    """The Preset model for this registry (cached per registry)."""
    info = SchemaInfo()
    transform = _union(registry, "transform", info)
    postprocessor = _union(registry, "postprocessor", info)
    metric = _union(registry, "metric", info)
    head_base = _override(
        HeadConfig,
        "HeadConfig",
        loss=_union(registry, "loss", info),
        postprocess=list[postprocessor],  # type: ignore[valid-type]
        metrics=list[metric],  # type: ignore[valid-type]
        target_normalize=Optional[transform],  # noqa: UP045
    )
    data = _override(DataConfig, "DataConfig", normalize=transform, augment=list[transform])  # type: ignore[valid-type]
    model = _override(
        ModelConfig,
        "ModelConfig",
        backbone=_union(registry, "backbone", info),
        heads=dict[str, _union(registry, "head", info, base=head_base)],  # type: ignore[misc]
    )
    train = _override(
        TrainConfig,
        "TrainConfig",
        optimizer=_union(registry, "optimizer", info),
        scheduler=_union(registry, "scheduler", info),
    )

    adversarial = _override(
        AdversarialConfig,
        "AdversarialConfig",
        discriminator=_union(registry, "discriminator", info),
        optimizer=_union(registry, "optimizer", info),
    )

    logger = _union(registry, "logger", info)
    logging = _override(LoggingConfig, "LoggingConfig", loggers=list[logger])  # type: ignore[valid-type]

    def components_fit(preset: Preset) -> Preset:
        _check_components(preset, registry)
        return preset

    preset = create_model(
        "Preset",
        __base__=Preset,
        __module__=__name__,
        __validators__={"components_fit": model_validator(mode="after")(components_fit)},  # type: ignore[dict-item]
        data=(data, _copy(Preset.model_fields["data"])),
        model=(model, _copy(Preset.model_fields["model"])),
        train=(train, _copy(Preset.model_fields["train"])),
        logging=(logging, _copy(Preset.model_fields["logging"])),
        adversarial=(Optional[adversarial], _copy(Preset.model_fields["adversarial"])),  # noqa: UP045
    )
    return preset, info


def _check_components(preset: Preset, registry: ComponentRegistry) -> None:
    """Rules that need to know the components: each component's own ``check``, sizes a
    backbone accepts, 3D-only heads, the output channels a head has or a loss is trained
    against."""
    for key, kind, spec in _components(preset):
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
    divisor_of = registry.get("backbone", backbone.name).extras.get("divisor")
    if divisor_of is not None:
        divisor = int(divisor_of(backbone.params()))
        for key, size in (
            ("data.patch_size", preset.data.patch_size),
            ("predict.roi_size", preset.predict.roi_size),
        ):
            if size is not None and any(s % divisor for s in size):
                fixed = [-(-s // divisor) * divisor for s in size]
                raise ValueError(
                    f"{key} {size} must be divisible by {divisor} along every axis for backbone "
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


def _components(preset: Preset) -> list[tuple[str, str, Any]]:
    """(key path, kind, spec) of every component a preset names."""
    data, model, train = preset.data, preset.model, preset.train
    found: list[tuple[str, str, Any]] = [
        ("data.normalize", "transform", data.normalize),
        *((f"data.augment.{i}", "transform", t) for i, t in enumerate(data.augment)),
        ("model.backbone", "backbone", model.backbone),
        ("train.optimizer", "optimizer", train.optimizer),
        ("train.scheduler", "scheduler", train.scheduler),
    ]
    for name, head in model.heads.items():
        where = f"model.heads.{name}"
        found += [(where, "head", head), (f"{where}.loss", "loss", head.loss)]
        found += [
            (f"{where}.postprocess.{i}", "postprocessor", p) for i, p in enumerate(head.postprocess)
        ]
        found += [(f"{where}.metrics.{i}", "metric", m) for i, m in enumerate(head.metrics)]
        if head.target_normalize is not None:
            found.append((f"{where}.target_normalize", "transform", head.target_normalize))
    found += [
        (f"logging.loggers.{i}" if i < len(preset.logging.loggers) else "logging.tensorboard",
         "logger", spec)
        for i, spec in enumerate(preset.logging.chosen_loggers())
    ]  # fmt: skip
    if preset.adversarial is not None:
        found += [
            ("adversarial.discriminator", "discriminator", preset.adversarial.discriminator),
            ("adversarial.optimizer", "optimizer", preset.adversarial.optimizer),
        ]
    return found
