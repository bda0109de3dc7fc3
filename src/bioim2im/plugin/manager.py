"""The plugin manager: pluggy's, with the built-in plugin modules and the installed plugins
(entry points in the ``bioim2im`` group), building one ComponentRegistry.

The built-in modules (:data:`bioim2im.builtins.PLUGINS`) are always registered first, as the
distribution ``bioim2im``; installed plugins are loaded by pluggy from their entry points. Each
kind's hook is called through pluggy, one plugin at a time, so that the registry knows which
distribution registered each component.

Environment switches:
- ``BIOIM2IM_PLUGINS=pkg-a,pkg-b``: load only these installed plugins (by distribution or entry
  point name); ``BIOIM2IM_PLUGINS=none`` loads none. The built-ins always load.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Iterable
from importlib.metadata import distributions, entry_points
from typing import Any

import pluggy

from bioim2im._version import __version__
from bioim2im.errors import PluginError
from bioim2im.plugin import hookspecs
from bioim2im.plugin.registry import ComponentRegistry, Registrar

GROUP = "bioim2im"
CORE = "bioim2im"
BUILTINS = "bioim2im.builtins"
"""The package whose ``PLUGINS`` are the built-in plugin modules (named, not imported, here:
the plugin machinery sits below the components it loads)."""

Plugin = tuple[Any, str, str]  # (module or object with hook functions, distribution, version)


def builtin_plugins() -> list[Plugin]:
    """The built-in plugin modules, as (module, "bioim2im", version)."""
    return [(m, CORE, __version__) for m in importlib.import_module(BUILTINS).PLUGINS]


def discover() -> list[Plugin]:
    """The built-in plugins, then the plugins installed in this environment (loaded by pluggy
    from their entry points), as (plugin, distribution, version)."""
    pm = pluggy.PluginManager(GROUP)
    wanted_env = os.environ.get("BIOIM2IM_PLUGINS", "").strip()
    if wanted_env:
        wanted = {w.strip() for w in wanted_env.split(",") if w.strip()}
        for ep in entry_points(group=GROUP):
            dist = ep.dist.name if ep.dist else ep.name
            if dist not in wanted and ep.name not in wanted:
                pm.set_blocked(ep.name)
    try:
        pm.load_setuptools_entrypoints(GROUP)
    except Exception as exc:
        raise PluginError(f"{_unloaded_entry_point(pm)} failed to import: {exc}") from exc
    installed = [
        (plugin, dist.project_name, dist.version)
        for plugin, dist in pm.list_plugin_distinfo()
        if dist.project_name != CORE  # an older install of the core announced its built-ins
    ]
    return [*builtin_plugins(), *sorted(installed, key=lambda p: p[1])]


def _unloaded_entry_point(pm: pluggy.PluginManager) -> str:
    """The entry point pluggy was loading when it failed: the first one, in pluggy's order,
    that is neither registered nor blocked."""
    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group == GROUP and not pm.get_plugin(ep.name) and not pm.is_blocked(ep.name):
                return f"plugin '{ep.name}' of package '{dist.metadata['Name']}' ({ep.value})"
    return "a plugin"


def plugin_manager(plugins: Iterable[Plugin]) -> tuple[pluggy.PluginManager, dict[str, Plugin]]:
    """A pluggy manager with these plugins registered (a plugin listed twice counts once), and
    each registered name's plugin, distribution and version."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    origin: dict[str, Plugin] = {}
    for plugin, dist, dist_version in plugins:
        try:
            hash(plugin)
        except TypeError:
            raise PluginError(
                f"package '{dist}' registers a plugin that is not hashable ({type(plugin).__name__}): "
                "give a module, or an object with the default identity hash"
            ) from None
        name = pm.register(plugin, name=f"{dist}:{getattr(plugin, '__name__', id(plugin))}")
        if name is not None:
            origin[name] = (plugin, dist, dist_version)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook that does not exist: {exc}") from exc
    for kind in hookspecs.KINDS:
        for impl in getattr(pm.hook, kind.hook).get_hookimpls():
            # Hooks are called one plugin at a time (build_registry), which finds them by name.
            if not hasattr(impl.plugin, kind.hook):
                _, dist, _ = origin[impl.plugin_name]
                raise PluginError(
                    f"package '{dist}' implements {kind.hook} as '{impl.function.__name__}': "
                    "name the function after the hook"
                )
    return pm, origin


def build_registry(plugins: Iterable[Plugin]) -> ComponentRegistry:
    """Register every plugin with pluggy and let each one add its components: each kind's hook
    is called through pluggy for one plugin at a time, in registration order, with a registrar
    that records the plugin's distribution."""
    pm, origin = plugin_manager(plugins)
    registry = ComponentRegistry()
    everyone = [plugin for plugin, _, _ in origin.values()]
    for kind in hookspecs.KINDS:
        for plugin, dist, dist_version in origin.values():
            if not hasattr(plugin, kind.hook):
                continue
            others = [p for p in everyone if p is not plugin]
            call = pm.subset_hook_caller(kind.hook, remove_plugins=others)
            call(registry=Registrar(registry, kind.name, dist, dist_version))
    return registry


@functools.lru_cache(maxsize=1)
def get_registry() -> ComponentRegistry:
    """The registry of this environment's plugins, built once per process."""
    return build_registry(discover())
