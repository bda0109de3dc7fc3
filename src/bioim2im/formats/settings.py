"""What ``--set`` may say to a model that is a file (a bioimage.io package, an ONNX or a
TorchScript file), and the preset prediction reads for one: the attached one (``--set``
applied), or the few sections a model that brings none needs (its window, the prediction
settings, the input axes)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bioim2im.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.plugin.registry import ComponentRegistry


def model_settings(overrides: Sequence[str], allowed: Sequence[str]) -> dict[str, Any]:
    """``--set`` values as a table, refused where they do not apply to this kind of model."""
    from bioim2im.config.loading import apply_override

    found: dict[str, Any] = {}
    for text in overrides:
        found = apply_override(found, text)
    for section, value in found.items():
        keys = [section] if not isinstance(value, dict) else [f"{section}.{k}" for k in value]
        for key in keys:
            if not any(key == a or key.startswith(f"{a}.") or a == section for a in allowed):
                raise UserError(
                    f"--set {key}: does not apply to this model (it takes {', '.join(allowed)})"
                )
    return found


def bare_preset(settings: Mapping[str, Any], window: Sequence[int], in_channels: int) -> Preset:
    """The preset sections prediction reads, for a model that brings none: the window, the
    prediction settings and the input axes."""
    from pydantic import ValidationError

    from bioim2im.config.schema import (
        ComponentSpec,
        DataConfig,
        ModelConfig,
        PredictConfig,
        Preset,
    )

    predict = dict(settings.get("predict", {}))
    predict.setdefault("roi_size", list(window))
    data = {"patch_size": list(predict["roi_size"])}
    if "axes" in settings.get("data", {}):
        data["axes"] = settings["data"]["axes"]
    try:
        predict_config = PredictConfig.model_validate(predict)
        data_config = DataConfig.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        ]
        raise UserError("--set values do not fit:", problems) from None
    if len(predict_config.roi_size or []) != len(window):
        raise UserError(
            f"predict.roi_size needs {len(window)} numbers, got {predict_config.roi_size}"
        )
    model = ModelConfig.model_construct(
        in_channels=in_channels,
        features=1,
        backbone=ComponentSpec.model_construct(name="packaged"),
        heads={},
    )
    return Preset.model_construct(
        description=None,
        data=data_config,
        model=model,
        predict=predict_config,
        adversarial=None,
    )


def preset_from_text(
    text: str, overrides: Sequence[str], registry: ComponentRegistry, source: str
) -> Preset:
    """The preset a model file carries (TOML ``text``), ``--set`` applied, validated; ``source``
    names it in messages."""
    from bioim2im.config.loading import apply_override, validate

    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise UserError(f"{source} is not valid TOML: {exc}") from None
    for override in overrides:
        data = apply_override(data, override)
    return validate(data, registry, source)


def build_component(kind: str, spec: Any, registry: ComponentRegistry) -> Any:
    """The registered ``kind`` a ``--set`` table (``{name = ..., params...}``) names, built."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise UserError(f"a {kind} is a table with a name, got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    return registry.get(kind, str(spec["name"])).build(params)


def table(value: Any, key: str) -> dict[str, Any]:
    """``value``, the ``--set`` value of ``key``, refused unless it is a table."""
    if not isinstance(value, dict):
        raise UserError(f"--set {key}: must be a table, got {value!r}")
    return value
