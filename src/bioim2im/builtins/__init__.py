"""The built-in components: plugin modules like any third party's.

Each module of :data:`PLUGINS` implements the hooks of :mod:`bioim2im.plugin.hookspecs` for the
kinds it provides (``@hookimpl def bioim2im_register_losses(registry): ...``); the plugin
manager registers them all, as the distribution ``bioim2im``, before the installed plugins. The
modules are light: heavy libraries are imported inside the factories (or in the private
``_*.py`` modules the factories use), so listing and validating components never imports torch.
"""

from __future__ import annotations

from bioim2im.builtins import (
    backbones,
    discriminators,
    heads,
    instance,
    io,
    layouts,
    loggers,
    losses,
    metrics,
    n2v,
    optim,
    postprocess,
    presets,
    transforms,
)

PLUGINS = (
    backbones,
    heads,
    instance,
    discriminators,
    losses,
    transforms,
    n2v,
    postprocess,
    io,
    metrics,
    optim,
    loggers,
    layouts,
    presets,
)
"""The built-in plugin modules, in the order their components are registered."""
