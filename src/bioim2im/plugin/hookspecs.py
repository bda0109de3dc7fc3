"""The plugin contract: the component kinds, one hook per kind, and what a registration says.

A plugin is a module (or object) with functions marked ``@bioim2im.hookimpl`` and named after
the hooks below, exposed through an entry point in the ``bioim2im`` group::

    [project.entry-points.bioim2im]
    my_plugin = "bioim2im_my_plugin"

Every hook receives ``registry``, a :class:`Registrar` bound to the hook's kind and to the
plugin's distribution, and registers components by calling
``registry.add(name, factory, description=None, *, params=None, **extras)``:

- ``name``: what a preset writes, e.g. ``name = "unet"``; unique per kind across all plugins
  (letters, digits, ``_``, ``-`` and ``.``).
- ``factory``: a callable, or a ``"module:attr"`` string imported only when the component is
  built, so that the plugin module stays light (no torch at import time).
- ``description``: one line for ``bioim2im list-plugins``; defaults to the factory's docstring.
- ``params``: a pydantic model of the user-facing parameters; defaults to one derived from the
  factory's keyword parameters and type hints. The *structural* arguments of the kind (listed
  in :data:`KINDS`) are passed by the engine and are never preset parameters.
- ``extras``: what the engine needs to know about the component beyond its factory, by kind
  (:data:`KINDS` lists each kind's extras and what they mean). An extra a kind does not have is
  refused, so a misspelt one fails at registration. Every kind takes the extra ``check``:
  :data:`CHECK`.

Return values are ignored. The built-in components are registered through these same hooks and
declare their extras like any plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pluggy
from pydantic import BaseModel

hookspec = pluggy.HookspecMarker("bioim2im")
hookimpl = pluggy.HookimplMarker("bioim2im")


CHECK = (
    "function(*, spatial_dims, **params) -> None, raising ValueError for parameters the "
    "component cannot be built with (e.g. two settings that exclude each other); `bioim2im "
    "check` runs it without importing the factory's heavy libraries, and building runs it "
    "first, so a preset that check accepts builds. spatial_dims is None where not known."
)
"""The ``check`` extra every kind takes."""

BIOIMAGEIO = (
    "function(params, axes) -> list of bioimage.io operations (dicts with `id` and `kwargs`, "
    "model format 0.5) that do what the component does, or None where these parameters have "
    "none; axes are the spatial axis ids ('z', 'y', 'x'). `bioim2im export --format "
    "bioimageio` writes a normalisation's as the input's preprocessing (after `ensure_dtype` "
    "float32) and a head's leading postprocessing steps' as its output's postprocessing, up to "
    "the first step without one; an `ensure_dtype` to an integer type makes the output a mask, "
    "after which no step is expressed. Without it the component cannot be exported as "
    "bioimage.io operations (normalisations) or stays in the attached preset (postprocessors)."
)
"""The ``bioimageio`` extra of normalisations and postprocessors."""


class Registrar(Protocol):
    """What every hook receives as ``registry``: it adds components of the hook's kind on behalf
    of the plugin's distribution (the plugin manager passes a
    :class:`bioim2im.plugin.registry.Registrar`). The module docstring says what each argument
    of :meth:`add` means."""

    kind: str
    package: str
    version: str

    def add(
        self,
        name: str,
        factory: Callable[..., Any] | str | Any,
        description: str | None = None,
        *,
        params: type[BaseModel] | None = None,
        **extras: Any,
    ) -> None: ...


ValueKind = Literal["float", "probabilities", "mask", "labels"]
"""What the values of a map are: ``float`` any real numbers (a head's raw output: logits, or a
regression), ``probabilities`` numbers in [0, 1] (after a sigmoid or softmax), ``mask`` 0 and 1
(after a threshold), ``labels`` integer ids (objects or classes)."""

_KIND_WORDS = {
    "float": "real values (a head's raw output)",
    "probabilities": "probabilities",
    "mask": "a 0/1 mask",
    "labels": "integer labels",
}


@dataclass(frozen=True)
class Values:
    """What a postprocessing step receives or gives: ``channels`` maps of one ``kind``."""

    channels: int
    kind: ValueKind

    def describe(self) -> str:
        plural = "" if self.channels == 1 else "s"
        return f"{_KIND_WORDS[self.kind]} in {self.channels} channel{plural}"


VALUES = (
    "function(received: Values, *, spatial_dims, **params) -> Values: what the step gives for "
    "the maps it receives (bioim2im.plugin.hookspecs.Values: channels and kind, 'float', "
    "'probabilities', 'mask' or 'labels'); it raises ValueError saying what it takes when it "
    "cannot take `received` (spatial_dims: of the head's output). `check` follows each head's "
    "chain from its raw output (out_channels of 'float') and refuses a step given maps it "
    "cannot take, naming model.heads.<head>.postprocess[i]; after a step without it, the rest "
    "of the chain is not checked"
)
"""The ``values`` extra of postprocessors."""


@dataclass(frozen=True)
class Kind:
    """One kind of component: the hook that registers it, the arguments the engine passes its
    factory by keyword, and the extras a registration may carry."""

    name: str
    hook: str
    structural: frozenset[str] = frozenset()
    own_extras: dict[str, str] = field(default_factory=dict)

    @property
    def extras(self) -> dict[str, str]:
        """The registration extras this kind takes, and what each means."""
        return {**self.own_extras, "check": CHECK}


DIRECTIONS = (
    "function(spatial_dims) -> {channel: spatial axis}: the output channels that are the "
    "component of a vector along a spatial axis of the input (0 = the first, Z in 3D), e.g. "
    "an offset or a flow per axis: test-time augmentation that flips that axis negates them "
    "as it flips the output back. A head's and its loss's are merged"
)

KINDS: tuple[Kind, ...] = (
    Kind(
        "backbone",
        "bioim2im_register_backbones",
        frozenset({"spatial_dims", "in_channels", "out_channels"}),
        {
            "divisor": "function(params) -> int, or a tuple of one int per spatial axis ((Z,) "
            "Y, X) for a network that downsamples the axes differently: every patch and window "
            "size must be a multiple of it (the network's total downsampling); `check` refuses "
            "other sizes",
            "input_size": "function(params) -> tuple: the one input size it accepts (e.g. a "
            "transformer's fixed image size); patch and window sizes must equal it",
        },
    ),
    Kind(
        "head",
        "bioim2im_register_heads",
        frozenset({"spatial_dims", "in_channels", "out_channels"}),
        {
            "spatial_dims": "tuple of the input dimensionalities it works in, e.g. (3,)",
            "output_spatial_dims": "int: spatial dimensions of its output when fewer than the "
            "input's (a 3D -> 2D projection drops the first axis)",
            "scale": "int, one int per output axis, or function(params) -> either: output voxels "
            "per input voxel (an upsampling head); targets are expected at that resolution",
            "out_channels": "function(spatial_dims) -> int: the output channels it has (each "
            "means one thing, e.g. an offset per axis); `check` refuses others",
            "directions": DIRECTIONS,
        },
    ),
    Kind(
        "discriminator",
        "bioim2im_register_discriminators",
        frozenset({"spatial_dims", "in_channels"}),
    ),
    Kind(
        "loss",
        "bioim2im_register_losses",
        frozenset({"spatial_dims"}),
        {
            "encode_target": "function(labels) -> array: the target of an instance head trained "
            "with this loss, made from each augmented label patch (1, *spatial) as float32 "
            "(0 = background), instead of the task's encoding; runs in the data-loading workers "
            "(see bioim2im.data.encodings)",
            "out_channels": "function(spatial_dims) -> int: the output channels a head trained "
            "with this loss must have; `check` refuses others",
            "directions": DIRECTIONS,
        },
    ),
    Kind(
        "transform",
        "bioim2im_register_transforms",
        frozenset({"spatial_dims", "keys", "image_keys", "label_keys"}),
        {
            "role": '"normalize" or "augment": where a preset may use it (data.normalize and a '
            "head's target_normalize, or data.augment)",
            "runs_last": "bool: it must be the last augmentation (e.g. Noise2Void masking)",
            "bioimageio": BIOIMAGEIO,
        },
    ),
    Kind(
        "postprocessor",
        "bioim2im_register_postprocessors",
        frozenset({"spatial_dims"}),
        {
            "pointwise": "bool: maps each voxel on its own (sigmoid, threshold...), so it runs on "
            "each block as it is predicted; other steps run afterwards on blocks with a halo",
            "labels": "bool: numbers objects (connected components, watershed), so prediction "
            "makes the ids unique and merges objects cut by block borders; it receives a block "
            "plus a halo, so positions it uses must be relative to the array it is given",
            "tuned": "function(params) -> {parameter: values to try}: the first such step of an "
            "instance head has these parameters tuned on the validation images at the end of "
            "training (grid search for the best AP@0.5)",
            "values": VALUES,
            "bioimageio": BIOIMAGEIO,
        },
    ),
    Kind(
        "reader",
        "bioim2im_register_readers",
        own_extras={"suffixes": 'tuple of the file suffixes it opens, e.g. (".czi",)'},
    ),
    Kind(
        "writer",
        "bioim2im_register_writers",
        own_extras={
            "suffixes": "tuple of the file suffixes it writes",
            "format": "the format name a command chooses it by (default: its name)",
        },
    ),
    Kind("metric", "bioim2im_register_metrics", frozenset({"spatial_dims"})),
    Kind("optimizer", "bioim2im_register_optimizers", frozenset({"parameters"})),
    Kind("scheduler", "bioim2im_register_schedulers", frozenset({"optimizer", "total_steps"})),
    Kind("logger", "bioim2im_register_loggers", frozenset({"run_dir", "preset", "start_step"})),
    Kind(
        "layout",
        "bioim2im_register_layouts",
        own_extras={
            "check_preset": "function(preset, params) -> None, raising ValueError for a preset "
            "the layout cannot train (e.g. a head its data cannot supervise), naming the keys; "
            "it may fill in what the preset leaves unset and the layout implies (a head's "
            "out_channels). `check` runs it after the preset's own rules, before the rules that "
            "need the components (channels a loss or head has, postprocessing chains); params "
            "are the layout's validated parameters",
        },
    ),
    Kind("preset", "bioim2im_register_presets"),
    Kind("evaluation", "bioim2im_register_evaluations"),
    Kind("command", "bioim2im_register_commands"),
)
"""Every component kind, in the order `list-plugins` shows them."""

KIND_NAMES: tuple[str, ...] = tuple(kind.name for kind in KINDS)
WITHOUT_PARAMETERS = frozenset({"preset", "evaluation", "command"})
"""Kinds a preset never names with parameters: their factory is used as it is."""
KIND_OF: dict[str, Kind] = {kind.name: kind for kind in KINDS}


@hookspec
def bioim2im_register_backbones(registry: Registrar) -> None:
    """Register networks that map an image to a feature map.

    Factories receive ``spatial_dims``, ``in_channels`` and ``out_channels`` (the feature
    channels the heads consume) by keyword, plus the preset's parameters. Extras: ``divisor``,
    ``input_size``.
    """


@hookspec
def bioim2im_register_heads(registry: Registrar) -> None:
    """Register heads that map the backbone's features to one task's output.

    Factories receive ``spatial_dims``, ``in_channels`` and ``out_channels`` by keyword.
    Extras: ``spatial_dims``, ``output_spatial_dims``, ``scale``, ``out_channels``.
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
    Factories may accept ``spatial_dims`` by keyword. Extras: ``encode_target`` and
    ``out_channels``, for a loss of an instance head that asks for its own target.
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
    nearest; regression targets are in neither and are interpolated like the image). Extras:
    ``role``, ``runs_last``, ``bioimageio`` (a normalisation's bioimage.io operations).
    """


@hookspec
def bioim2im_register_postprocessors(registry: Registrar) -> None:
    """Register postprocessors: steps applied to a head's raw output at prediction time.

    A factory returns a function from an array (C, *spatial) to an array (C', *spatial).
    Extras: ``pointwise`` (runs on each block as predicted), ``labels`` (numbers objects),
    ``tuned`` (parameters tuned at the end of training), ``values`` (the channels and kind of
    values it takes and gives, so that `check` refuses a chain that feeds it the wrong maps),
    ``bioimageio`` (the step as bioimage.io operations, for exported packages).
    """


@hookspec
def bioim2im_register_readers(registry: Registrar) -> None:
    """Register image readers: a factory ``(path, **params) -> LazyImage`` (the built-in ones
    take ``axes`` and ``level``). Extra: ``suffixes``."""


@hookspec
def bioim2im_register_writers(registry: Registrar) -> None:
    """Register image writers: a factory ``(path, array, *, axes, voxel_size, is_label,
    **params)`` that writes the file atomically. Extras: ``suffixes`` and ``format``."""


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
def bioim2im_register_loggers(registry: Registrar) -> None:
    """Register experiment trackers that ``logging.loggers`` chooses.

    Factories receive ``run_dir`` (the run directory, a ``pathlib.Path``), ``preset`` (the
    resolved preset as plain data, what ``bioim2im check`` prints) and ``start_step`` (0, or
    the step a resumed run continues from: what was logged after it is logged again) by
    keyword, and return an object with three methods, called on the process that writes the
    run (rank 0) only:

    - ``log_metrics(step: int, values: dict[str, float])``: every logged training step
      (``loss``, ``loss/<head>``, ``lr``, ``samples_per_s``) and every validation
      (``val/loss``, ``val/<head>/<metric>``); the values are finite;
    - ``log_image(step: int, name: str, image: numpy.ndarray)``: a validation snapshot, a
      (H, W) uint8 montage of input / target / prediction;
    - ``close(status: str)``: once, when the run ends: ``"finished"``, ``"stopped"`` (a
      signal or the time budget; it may be resumed) or ``"failed"``. Every file of the run
      directory (checkpoints, ``metrics.jsonl``, snapshots, ``loss_curve.png``,
      ``tuning.json``, ``result.json``) is written by then.

    A factory raises ``bioim2im.errors.UserError`` for settings it cannot work with (a tracker
    that cannot be reached): the run stops before training. An exception from a method
    during the run is reported once and that logger is dropped; training goes on.
    """


@hookspec
def bioim2im_register_layouts(registry: Registrar) -> None:
    """Register data layouts: how ``data.path`` is organised and made into training data.

    ``data.layout`` names one, as a table ``{ name = "NAME", <parameters> }`` or, for a layout
    without required parameters, as its name alone (``layout = "folders"``). The built-in
    layouts are ``auto``, ``folders``, ``pairs`` and ``csv`` (image files and their targets,
    read with the rest of ``[data]``). The factory receives the layout's parameters by keyword
    (no structural arguments) and returns a layout object with three methods; heavy libraries
    are imported inside them, so that ``check`` without ``--data`` stays light:

    - ``preflight(preset, *, registry, run_dir, scan) -> bioim2im.data.preflight.Report``: what
      ``bioim2im check --data`` shows and what training checks first: the examples found per
      split (``pairs`` and ``entries``) and every problem, collected in ``problems`` rather than
      raised (``scan``: also read through the data's values; ``run_dir``: where a run records
      e.g. its split, or None).
    - ``datasets(preset, run_dir, *, registry, check) -> (training, validation or None)``:
      the training datasets (``torch.utils.data.Dataset``), raising ``UserError`` with every
      data problem at once (``check``: read through the data as ``preflight`` with ``scan``
      does; ``run_dir``: the run, or None). Item ``i`` must be a pure function of
      ``(train.seed, i)`` (exact resume, disjoint DDP ranks), a dict of tensors ``image``
      (C, *patch_size), ``target/<head>`` and optionally ``weight/<head>`` (a cost map: 0 =
      not supervised), plus ``truth/<head>`` on validation items; the training dataset has
      ``epoch_length(batch_size) -> int`` (optimizer steps per epoch) and may have
      ``preload()`` (run before the loader's workers start).
    - ``image_pairs(preset, *, registry) -> bioim2im.data.sources.Splits``: the image files of
      each split and their target files, problems collected, for what needs whole images:
      ``bioim2im export``'s test image and ``api.validation_images``. A layout whose examples
      are not image files raises ``UserError`` saying so.

    Extra: ``check_preset``, the layout's rules over the whole preset.
    """


@hookspec
def bioim2im_register_presets(registry: Registrar) -> None:
    """Register presets that ``extends = "NAME"`` can name.

    The factory is the path of a TOML file (``pathlib.Path`` or ``str``).
    """


@hookspec
def bioim2im_register_evaluations(registry: Registrar) -> None:
    """Register evaluation tasks that ``bioim2im evaluate --task NAME`` (``api.evaluate(task=
    NAME)``) runs instead of the built-in ones (semantic, instance, regression).

    The factory is called as ``factory(pred, truth, *, head, json_path, csv_path, overwrite)``
    (paths as given; ``head``, ``json_path`` and ``csv_path`` may be None) and returns the
    report: an object with ``to_json()``, shown by the command line as a rich renderable
    (``__rich_console__``). It writes ``json_path``/``csv_path`` itself, or raises
    ``bioim2im.errors.UserError`` for an option it does not take; an existing report file is
    replaced only with ``overwrite``, never ``pred`` or ``truth``.
    """


@hookspec
def bioim2im_register_commands(registry: Registrar) -> None:
    """Register command groups of the command line: ``bioim2im NAME ...``.

    The factory is a ``typer.Typer`` app (or a ``"module:attr"`` string naming one, imported
    when the command line starts: keep that module light). Its commands should derive from the
    plugin's Python API with :func:`bioim2im.cli.derive.command`, so that each option is
    written once, on the API function; the description is the group's help line. A name that
    is already a command of bioim2im is refused.
    """
