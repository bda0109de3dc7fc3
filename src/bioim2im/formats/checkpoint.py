"""A run directory or a checkpoint read as a :class:`~bioim2im.formats.trained_model.TrainedModel`:
the checkpoint's preset (``--set`` applied) rebuilds the network from the registered
components, and its weights (the averaged ones when the run kept an EMA) are loaded into it.

Writing and reading the checkpoint file itself (atomic, weights-only) is
:mod:`bioim2im.model.checkpoint`'s: training writes it and resumes from it; this module only
reads the model in it.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.errors import UserError
from bioim2im.formats.trained_model import TrainedModel, head_outputs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    import torch


def load_checkpoint_model(
    run_or_checkpoint: str | Path,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> TrainedModel:
    """The best checkpoint of a run directory (or a checkpoint file) for prediction, its network
    a torch module. ``overrides`` (``KEY.PATH=VALUE``, e.g. ``predict.tta=true``) change the
    checkpoint's preset before it is validated; checkpoint problems raise a UserError naming
    the file."""
    import torch

    from bioim2im.config.loading import apply_override, to_toml, validate
    from bioim2im.model.checkpoint import checkpoint_path, load_checkpoint
    from bioim2im.model.network import amp_dtype, build_model
    from bioim2im.plugin.manager import get_registry

    path = checkpoint_path(run_or_checkpoint)
    state = load_checkpoint(path)
    if not isinstance(state.get("model"), Mapping) or not isinstance(state.get("preset"), str):
        raise UserError(f"{path}: the checkpoint lacks its model weights or its preset")
    registry = get_registry()
    try:
        data = tomllib.loads(state["preset"])
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: the checkpoint's preset is not valid TOML: {exc}") from None
    except RecursionError:
        raise UserError(f"{path}: the checkpoint's preset nests tables too deeply") from None
    for text in overrides:
        data = apply_override(data, text)
    preset = validate(data, registry, f"the preset of checkpoint {path}")
    network = build_model(preset, registry)
    try:
        network.load_state_dict(_prediction_weights(state))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(
            f"{path}: the weights do not fit the network its preset describes"
            f"{' (changed by --set?)' if overrides else ''}: {first}"
        ) from None
    device = torch.device(device)
    network.to(device).eval()
    heads = head_outputs(preset, registry)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    digest.update(to_toml(preset).encode())
    return TrainedModel(
        checkpoint=path,
        preset=preset,
        registry=registry,
        network=network,
        heads=heads,
        device=device,
        amp_dtype=amp_dtype(
            preset.train.amp if preset.predict.amp == "auto" else preset.predict.amp, device
        ),
        fingerprint=digest.hexdigest(),
    )


def _prediction_weights(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The averaged weights when the run kept an EMA (they are what validation scored), else the
    trained ones."""
    ema = state.get("ema")
    if isinstance(ema, Mapping):
        prefix = "module."
        averaged = {k[len(prefix) :]: v for k, v in ema.items() if k.startswith(prefix)}
        if averaged:
            return averaged
    return state["model"]
