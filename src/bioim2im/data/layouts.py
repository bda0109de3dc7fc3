"""The data layout a preset names (``data.layout``): a registered component whose object finds,
checks and serves the preset's data (the contract: ``bioim2im_register_layouts`` in
:mod:`bioim2im.plugin.hookspecs`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.plugin.registry import ComponentRegistry


def dataset_layout(preset: Preset, registry: ComponentRegistry | None = None) -> Any:
    """The layout object of ``preset``'s ``data.layout``, built with its parameters."""
    if registry is None:
        from bioim2im.plugin.manager import get_registry

        registry = get_registry()
    return registry.build("layout", preset.data.layout)
