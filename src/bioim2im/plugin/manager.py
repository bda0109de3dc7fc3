"""The plugin manager: entry points in the ``bioim2im`` group -> one ComponentRegistry.

The built-in components are the entry point ``bioim2im = "bioim2im.builtins"`` of this very
distribution; they are loaded exactly like a third party's plugin.

Environment switches:
- ``BIOIM2IM_PLUGINS=pkg-a,pkg-b``: load only these distributions' plugins (besides bioim2im).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from bioim2im._version import __version__
from bioim2im.errors import PluginError
from bioim2im.plugin import hookspecs
from bioim2im.plugin.registry import ComponentRegistry, Registrar

GROUP = "bioim2im"
CORE = "bioim2im"

Plugin = tuple[Any, str, str]  # (module or object with hook functions, distribution, version)


def discover() -> list[Plugin]:
    """The plugins installed in this environment, as (plugin, distribution, version)."""
    wanted_env = os.environ.get("BIOIM2IM_PLUGINS", "").strip()
    wanted = {w.strip() for w in wanted_env.split(",") if w.strip()} if wanted_env else None
    found: list[Plugin] = []
    for ep in sorted(
        entry_points(group=GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)
    ):
        dist = ep.dist.name if ep.dist else ep.name
        if wanted is not None and dist != CORE and dist not in wanted and ep.name not in wanted:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin '{ep.name}' of package '{dist}' ({ep.value}) failed to import: {exc}"
            ) from exc
        found.append((plugin, dist, ep.dist.version if ep.dist else "unknown"))
    if not any(dist == CORE for _, dist, _ in found):
        # Running from a source tree that was never installed: the entry point is missing,
        # but the built-ins must still be there. They load through an entry point like any
        # plugin's, so the plugin machinery never imports them by name.
        builtins = EntryPoint(name=CORE, value="bioim2im.builtins", group=GROUP).load()
        found.insert(0, (builtins, CORE, __version__))
    return found


def build_registry(plugins: Iterable[Plugin]) -> ComponentRegistry:
    """Register every plugin with pluggy and let each one add its components."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    origin: dict[str, tuple[str, str]] = {}
    for plugin, dist, dist_version in plugins:
        name = pm.register(plugin, name=f"{dist}:{getattr(plugin, '__name__', id(plugin))}")
        if name is None:  # already registered (the same module exposed twice)
            continue
        origin[name] = (dist, dist_version)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook that does not exist: {exc}") from exc
    registry = ComponentRegistry()
    for kind in hookspecs.KINDS:
        caller = getattr(pm.hook, kind.hook)
        # Each implementation is called on its own so the registry knows who registered what.
        for impl in caller.get_hookimpls():  # in registration order: bioim2im first
            dist, dist_version = origin[impl.plugin_name]
            impl.function(registry=Registrar(registry, kind.name, dist, dist_version))
    return registry


@functools.lru_cache(maxsize=1)
def get_registry() -> ComponentRegistry:
    """The registry of this environment's plugins, built once per process."""
    return build_registry(discover())
