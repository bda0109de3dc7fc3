"""The plugin contract: one hook per component kind.

A plugin is a module (or object) with functions marked ``@bioim2im.hookimpl`` and named after
the hooks below, exposed through an entry point in the ``bioim2im`` group::

    [project.entry-points.bioim2im]
    my_plugin = "bioim2im_my_plugin"

Every hook receives ``registry``, a :class:`bioim2im.registry.Registrar` bound to the hook's
kind and to the plugin's distribution, and registers components by calling
``registry.add(name, factory, description=None, *, params=None, **extras)``:

- ``name``: what a preset writes, e.g. ``name = "unet"``; unique per kind across all plugins.
- ``factory``: a callable, or a ``"module:attr"`` string imported only when the component is
  built, so that the plugin module stays light (no torch at import time).
- ``description``: one line for ``bioim2im list-plugins``; defaults to the factory's docstring.
- ``params``: a pydantic model of the user-facing parameters; defaults to one derived from the
  factory's signature and type hints (structural arguments the engine passes are left out).

Return values are ignored. The built-in components are registered through these same hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from bioim2im.registry import Registrar

hookspec = pluggy.HookspecMarker("bioim2im")
hookimpl = pluggy.HookimplMarker("bioim2im")


@hookspec
def bioim2im_register_backbones(registry: Registrar) -> None:
    """Register networks that map an image to a feature map.

    Factories receive ``spatial_dims``, ``in_channels`` and ``out_channels`` (the feature
    channels the heads consume) by keyword, plus the preset's parameters.
    """


@hookspec
def bioim2im_register_heads(registry: Registrar) -> None:
    """Register heads that map the backbone's features to one task's output.

    Factories receive ``spatial_dims``, ``in_channels`` and ``out_channels`` by keyword.
    """


@hookspec
def bioim2im_register_discriminators(registry: Registrar) -> None:
    """Register discriminators for adversarial training (pix2pix, CycleGAN).

    Factories receive ``spatial_dims`` and ``in_channels`` by keyword and return a network
    mapping an image to a map (or vector) of real/fake logits.
    """


@hookspec
def bioim2im_register_losses(registry: Registrar) -> None:
    """Register losses: modules called as ``loss(prediction, target, weight=None)``.

    ``weight`` is a cost map broadcastable to the prediction; pixels where it is 0 do not count.
    Factories may accept ``spatial_dims`` by keyword.
    """


@hookspec
def bioim2im_register_transforms(registry: Registrar) -> None:
    """Register transforms: normalizations and augmentations applied to training samples.

    A normalization's factory returns a callable on one image (C, *spatial) -> float32; pass
    ``role="normalize"``. An augmentation's returns ``t(sample, rng) -> sample`` on a dict of
    float32 arrays (C, *spatial) keyed ``image``, ``target/<head>``, ``weight/<head>``; pass
    ``role="augment"``. Its factory may accept, by keyword, the structural arguments
    ``spatial_dims``; ``keys`` (every array that moves with the image); ``image_keys`` (those an
    intensity change applies to: the input); ``label_keys`` (labels and masks, to be resampled as
    nearest; regression targets are in neither and are interpolated like the image).
    """


@hookspec
def bioim2im_register_postprocessors(registry: Registrar) -> None:
    """Register postprocessors: steps applied to a head's raw output at prediction time."""


@hookspec
def bioim2im_register_readers(registry: Registrar) -> None:
    """Register image readers; ``extras`` carry ``suffixes=(".tif", ...)`` they open."""


@hookspec
def bioim2im_register_writers(registry: Registrar) -> None:
    """Register image writers; ``extras`` carry ``suffixes`` and the ``format`` name."""


@hookspec
def bioim2im_register_metrics(registry: Registrar) -> None:
    """Register metrics computed between a prediction and its ground truth."""


@hookspec
def bioim2im_register_optimizers(registry: Registrar) -> None:
    """Register optimizers; factories receive the trainable ``parameters`` by keyword."""


@hookspec
def bioim2im_register_schedulers(registry: Registrar) -> None:
    """Register learning-rate schedules; factories receive ``optimizer`` and ``total_steps``."""


@hookspec
def bioim2im_register_presets(registry: Registrar) -> None:
    """Register presets that ``extends = "NAME"`` can name.

    The factory is the path of a TOML file (``pathlib.Path`` or ``str``).
    """
