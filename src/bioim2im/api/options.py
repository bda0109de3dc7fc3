"""Each command's options are written once, on the parameters of its API function:
``Annotated[type, Arg(...)]`` (a positional argument on the command line) or
``Annotated[type, Opt(...)]`` (an option), with the help text the command line shows. The
command line derives its commands from these signatures (:mod:`bioim2im.cli.derive`);
parameters marked :class:`PythonOnly` (callbacks) have no command-line form.

This module is light: markers and a few shared option types, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated


@dataclass(frozen=True)
class Arg:
    """A positional argument of the command."""

    help: str
    metavar: str | None = None


@dataclass(frozen=True)
class Opt:
    """An option of the command: ``--<parameter-name>`` unless ``flags`` are given (the long
    one first, e.g. ``("--output", "-o")``); a list is a repeatable option."""

    help: str
    flags: tuple[str, ...] = ()
    metavar: str | None = None


@dataclass(frozen=True)
class PythonOnly:
    """Not on the command line (a callback, a Python object)."""


SET_HELP = (
    "Override a preset key; VALUE is read as TOML (numbers, true, [1, 2], {a = 1}) or else as "
    "a bare string. Repeatable; later ones win."
)

Overrides = Annotated[Sequence[str], Opt(SET_HELP, ("--set", "-s"), metavar="KEY.PATH=VALUE")]
"""``--set key.path=value``, repeatable: preset keys overridden after the preset is resolved."""

TrustModel = Annotated[
    bool,
    Opt(
        "Run a TorchScript model from elsewhere even when it holds more than tensor "
        "operations (see the README's security model): only for a model you trust."
    ),
]

ModelSource = str | Path
"""A run directory, a checkpoint, a bioimage.io package (zip, folder or rdf.yaml), an ONNX or
TorchScript file, or the https:// URL of one."""
