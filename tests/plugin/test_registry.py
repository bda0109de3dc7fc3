"""The plugin contract: hooks, provenance, the clash rule, parameter models from signatures."""

from __future__ import annotations

import types
from typing import Literal

import pytest
from pydantic import ValidationError

from bioim2im import builtins, hookimpl
from bioim2im.errors import PluginError
from bioim2im.plugin.manager import build_registry


def _plugin(**hooks) -> types.ModuleType:
    plugin = types.ModuleType("bioim2im_test_plugin")
    for name, fn in hooks.items():
        setattr(plugin, name, hookimpl(fn))
    return plugin


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
        build_registry(
            [*((m, "bioim2im", "0") for m in builtins.PLUGINS), (other, "bioim2im-other", "1")]
        )


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


def _installed(site, name: str, module: str, code: str) -> None:
    """A distribution ``name`` with one entry point in the bioim2im group, installed in
    ``site`` (a folder put on sys.path) as pip would leave it."""
    (site / f"{module}.py").write_text(code)
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[bioim2im]\n{module} = {module}\n")


def test_installed_plugins_are_loaded_by_pluggy_with_their_distribution(
    tmp_path, monkeypatch
) -> None:
    from bioim2im.plugin.manager import discover

    code = (
        "from bioim2im import hookimpl\n"
        "@hookimpl\n"
        "def bioim2im_register_losses(registry):\n"
        "    registry.add('from_site', lambda *, eps=1.0: eps)\n"
    )
    _installed(tmp_path, "bioim2im-site", "bioim2im_site", code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("BIOIM2IM_PLUGINS", raising=False)
    component = build_registry(discover()).get("loss", "from_site")
    assert (component.package, component.version) == ("bioim2im-site", "1.0")
    monkeypatch.setenv("BIOIM2IM_PLUGINS", "none")
    assert ("loss", "from_site") not in build_registry(discover())


def test_a_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch) -> None:
    from bioim2im.plugin.manager import discover

    _installed(tmp_path, "bioim2im-broken", "bioim2im_broken", "raise ImportError('no numpy 9')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("BIOIM2IM_PLUGINS", raising=False)
    with pytest.raises(PluginError) as info:
        discover()
    message = str(info.value)
    assert "'bioim2im_broken' of package 'bioim2im-broken'" in message
    assert "no numpy 9" in message


def test_a_hook_must_be_named_after_its_spec() -> None:
    plugin = types.ModuleType("bioim2im_renamed")

    @hookimpl(specname="bioim2im_register_backbones")
    def add_backbones(registry):
        registry.add("renamed", small_net)

    plugin.add_backbones = add_backbones  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match="as 'add_backbones': name the function after the hook"):
        build_registry([(plugin, "bioim2im-renamed", "1")])


def test_hooks_run_through_pluggy_so_its_ordering_applies() -> None:
    """pluggy's own call machinery runs the hooks (not the manager calling functions)."""
    seen: list[str] = []

    @hookimpl(wrapper=True)
    def bioim2im_register_backbones(registry):
        seen.append("before")
        result = yield
        seen.append("after")
        return result

    wrapping = types.ModuleType("bioim2im_wrapping")
    wrapping.bioim2im_register_backbones = bioim2im_register_backbones  # type: ignore[attr-defined]
    build_registry([(wrapping, "bioim2im-wrapping", "1")])
    assert seen == ["before", "after"]
