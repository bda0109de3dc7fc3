"""Model formats: everything that reads, converts or writes a trained model, and the
:class:`~bioim2im.formats.trained_model.TrainedModel` prediction runs, whatever the format.

- :mod:`~bioim2im.formats.trained_model`: the model prediction runs (network, preset, and per
  head what prediction writes);
- :mod:`~bioim2im.formats.checkpoint`: a run directory or checkpoint read as one;
- :mod:`~bioim2im.formats.model_files`: models that are files, told apart (``settings``: what
  ``--set`` says to them); :mod:`~bioim2im.formats.urls`: a model named by URL;
- :mod:`~bioim2im.formats.bioimageio`: bioimage.io packages, read (``load``, ``package``,
  ``operations``) and written (``export``, ``layout``, ``documents``);
- :mod:`~bioim2im.formats.graphs`: TorchScript and ONNX graphs: converted and checked
  (``conversion``), run (``runtimes``), read (``load``, ``allowlist``) and written
  (``export``); :mod:`~bioim2im.formats.backends`: a checkpoint's network run by ONNX Runtime;
- :mod:`~bioim2im.formats.export`: ``bioim2im export``, from a run to the format asked for;
  :mod:`~bioim2im.formats.archives`: the bounds on what a model's zip may unpack to.

Prediction uses a model only through :func:`load_model` and the trained model's module (an
import-linter contract keeps it so).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from bioim2im.formats.trained_model import TrainedModel


def load_model(
    run_or_checkpoint: str | Path,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
    *,
    trust_model: bool = False,
) -> TrainedModel:
    """Read a run directory's best checkpoint (or a checkpoint file) for prediction.

    ``overrides`` (``KEY.PATH=VALUE``, e.g. ``predict.tta=true``) change the checkpoint's preset
    before it is validated. Checkpoint problems raise a UserError naming the file. A bioimage.io
    package, an ONNX or a TorchScript file is read by :mod:`bioim2im.formats.model_files`
    (from an ``http(s)://`` URL too: :mod:`bioim2im.formats.urls`); a TorchScript graph from
    such a file runs only when it holds tensor operations alone, unless ``trust_model``. The
    network runs with the backend ``predict.backend`` chooses.
    """
    from bioim2im.formats import model_files, urls
    from bioim2im.formats.backends import use_backend
    from bioim2im.formats.checkpoint import load_checkpoint_model

    if urls.is_url(run_or_checkpoint):
        return urls.load_model_url(
            str(run_or_checkpoint), overrides, device, trust_model=trust_model
        )
    if model_files.is_model_file(run_or_checkpoint):
        return model_files.load_model_file(
            Path(run_or_checkpoint), overrides, device, trust_model=trust_model
        )
    return use_backend(load_checkpoint_model(run_or_checkpoint, overrides, device))
