"""Presets: TOML files validated by pydantic models built from the component registry."""

from bioim2im.config.loading import load_preset, resolve, to_toml, validate
from bioim2im.config.schema import (
    ComponentSpec,
    DataConfig,
    HeadConfig,
    LoggingConfig,
    ModelConfig,
    PredictConfig,
    Preset,
    TrainConfig,
)

__all__ = [
    "ComponentSpec",
    "DataConfig",
    "HeadConfig",
    "LoggingConfig",
    "ModelConfig",
    "PredictConfig",
    "Preset",
    "TrainConfig",
    "load_preset",
    "resolve",
    "to_toml",
    "validate",
]
