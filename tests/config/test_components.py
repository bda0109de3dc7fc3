"""One walk of the places where a preset names components: the schema's marks, the rules
checked per component, and the versions a checkpoint records."""

from __future__ import annotations

import types
from pathlib import Path

from bioim2im import hookimpl
from bioim2im.builtins.presets import presets_dir
from bioim2im.config.components import components, kind_keys
from bioim2im.config.loading import resolve, validate
from bioim2im.model.network import components_used
from bioim2im.plugin.manager import build_registry, discover


def _critic(*, spatial_dims: int, in_channels: int, width: int = 4) -> object:
    """A test discriminator."""
    return ("critic", width)


def _scale(*, factor: float = 2.0) -> object:
    """A test normalisation."""
    return lambda image: image * factor


def _plugin() -> types.ModuleType:
    plugin = types.ModuleType("bioim2im_parts")

    @hookimpl
    def bioim2im_register_discriminators(registry):
        registry.add("critic", _critic)

    @hookimpl
    def bioim2im_register_transforms(registry):
        registry.add("times", _scale, role="normalize")

    plugin.bioim2im_register_discriminators = bioim2im_register_discriminators  # type: ignore[attr-defined]
    plugin.bioim2im_register_transforms = bioim2im_register_transforms  # type: ignore[attr-defined]
    return plugin


def _pix2pix(registry, *overrides: str):
    table = resolve(presets_dir() / "pix2pix-2d.toml", overrides, registry)
    return validate(table, registry, "pix2pix-2d")


def test_every_place_a_preset_names_a_component_is_walked() -> None:
    registry = build_registry(discover())
    preset = _pix2pix(registry, "logging.tensorboard=true")
    found = {c.key: (c.kind, c.spec.name) for c in components(preset)}
    assert found["data.normalize"] == ("transform", "percentile")
    assert found["data.augment.0"] == ("transform", "flip")
    assert found["model.backbone"] == ("backbone", "unet")
    assert found["model.heads.translated"] == ("head", "conv")
    assert found["model.heads.translated.loss"] == ("loss", "l1")
    assert found["model.heads.translated.target_normalize"] == ("transform", "percentile")
    assert found["model.heads.translated.metrics.1"] == ("metric", "ssim")
    assert found["train.optimizer"] == ("optimizer", "adam")
    assert found["train.scheduler"][0] == "scheduler"
    assert found["logging.tensorboard"] == ("logger", "tensorboard")
    assert found["adversarial.discriminator"] == ("discriminator", "patchgan")
    assert found["adversarial.optimizer"][0] == "optimizer"


def test_checkpoint_versions_name_the_package_of_every_component_used() -> None:
    """The discriminator and a head's target normalisation count too (they were left out)."""
    registry = build_registry([*discover(), (_plugin(), "bioim2im-parts", "7.1")])
    only_discriminator = _pix2pix(registry, 'adversarial.discriminator={name = "critic"}')
    assert components_used(only_discriminator, registry)["bioim2im-parts"] == "7.1"
    only_target = _pix2pix(
        registry, 'model.heads.translated.target_normalize={name = "times", factor = 3.0}'
    )
    assert components_used(only_target, registry)["bioim2im-parts"] == "7.1"
    neither = _pix2pix(registry)
    assert "bioim2im-parts" not in components_used(neither, registry)


def test_the_keys_of_each_kind_come_from_the_schema() -> None:
    from bioim2im.config.components import component_keys
    from bioim2im.config.reference import COMPONENT_KEYS

    assert component_keys() == COMPONENT_KEYS
    assert kind_keys("transform") == [
        "data.normalize",
        "data.augment",
        "model.heads.<name>.target_normalize",
    ]
    assert kind_keys("optimizer") == ["train.optimizer", "adversarial.optimizer"]
    assert kind_keys("discriminator") == ["adversarial.discriminator"]
    assert kind_keys("logger") == ["logging.loggers"]


def test_a_plugin_component_is_checked_where_it_sits(tmp_path: Path) -> None:
    registry = build_registry([*discover(), (_plugin(), "bioim2im-parts", "7.1")])
    preset = _pix2pix(registry, 'adversarial.discriminator={name = "critic", width = 9}')
    assert preset.adversarial is not None
    assert preset.adversarial.discriminator.params() == {"width": 9}
