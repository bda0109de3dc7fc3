"""The plugin contract: hooks, provenance, the clash rule, parameter models from signatures."""

from __future__ import annotations

import types
from typing import Literal

import pytest
from pydantic import ValidationError

from bioim2im import builtins, hookimpl
from bioim2im.errors import PluginError
from bioim2im.plugin.manager import build_registry


def _plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def small_net(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    width: int = 8,
    act: Literal["relu", "gelu"] = "relu",
) -> dict:
    """A test backbone."""
    return {
        "spatial_dims": spatial_dims,
        "in": in_channels,
        "out": out_channels,
        "width": width,
        "act": act,
    }


def test_two_packages_registering_the_same_name_is_an_error_naming_both() -> None:
    first = _plugin(bioim2im_register_backbones=lambda registry: registry.add("dup", small_net))
    second = _plugin(bioim2im_register_backbones=lambda registry: registry.add("dup", small_net))
    with pytest.raises(PluginError) as info:
        build_registry([(first, "bioim2im-first", "1.0"), (second, "bioim2im-second", "2.0")])
    message = str(info.value)
    assert "backbone 'dup'" in message
    assert "bioim2im-first" in message and "bioim2im-second" in message


def test_a_third_party_cannot_take_a_builtin_name() -> None:
    def register(registry):
        registry.add("unet", small_net)

    other = _plugin(bioim2im_register_backbones=register)
    with pytest.raises(PluginError, match="'bioim2im' and by package 'bioim2im-other'"):
        build_registry([(builtins, "bioim2im", "0"), (other, "bioim2im-other", "1")])


def test_same_name_in_different_kinds_is_fine() -> None:
    plugin = _plugin(
        bioim2im_register_backbones=lambda registry: registry.add("thing", small_net),
        bioim2im_register_losses=lambda registry: registry.add("thing", lambda *, eps=1.0: eps),
    )
    registry = build_registry([(plugin, "bioim2im-x", "1")])
    assert ("backbone", "thing") in registry and ("loss", "thing") in registry


def test_provenance_and_description() -> None:
    plugin = _plugin(bioim2im_register_backbones=lambda registry: registry.add("small", small_net))
    component = build_registry([(plugin, "bioim2im-small", "3.1")]).get("backbone", "small")
    assert (component.package, component.version) == ("bioim2im-small", "3.1")
    assert component.description == "A test backbone."


def test_parameters_come_from_the_signature_without_structural_arguments() -> None:
    plugin = _plugin(bioim2im_register_backbones=lambda registry: registry.add("small", small_net))
    component = build_registry([(plugin, "p", "1")]).get("backbone", "small")
    assert set(component.params.model_fields) == {"width", "act"}
    with pytest.raises(ValidationError):
        component.params.model_validate({"act": "tanh"})
    with pytest.raises(ValidationError):
        component.params.model_validate({"widht": 3})
    built = component.build({"width": 4}, spatial_dims=2, in_channels=1, out_channels=3)
    assert built == {"spatial_dims": 2, "in": 1, "out": 3, "width": 4, "act": "relu"}


def test_string_factories_are_imported_only_when_built() -> None:
    from pydantic import BaseModel

    class Params(BaseModel):
        pass

    plugin = _plugin(
        bioim2im_register_losses=lambda registry: registry.add(
            "late", "bioim2im_not_installed_anywhere:thing", "lazy", params=Params
        )
    )
    registry = build_registry([(plugin, "bioim2im-late", "1")])
    component = registry.get("loss", "late")  # registering did not import anything
    with pytest.raises(PluginError, match="bioim2im_not_installed_anywhere:thing"):
        component.build({})


def test_a_misspelt_hook_is_refused() -> None:
    plugin = _plugin(bioim2im_register_backbone=lambda registry: None)
    with pytest.raises(PluginError, match="does not exist"):
        build_registry([(plugin, "bioim2im-typo", "1")])


def test_unknown_name_suggests() -> None:
    from bioim2im.errors import UserError

    plugin = _plugin(bioim2im_register_backbones=lambda registry: registry.add("small", small_net))
    with pytest.raises(UserError, match="did you mean 'small'"):
        build_registry([(plugin, "p", "1")]).get("backbone", "smal")
