"""The Python API: the one door of every command; the command line only parses, calls these
functions and prints what they return.

- :func:`train`: a preset -> a run directory with checkpoints; a :class:`TrainResult`.
- :func:`predict`: an image in memory (or any lazy image) -> each head's output array.
- :func:`predict_files`: image files of any size -> prediction files; a
  :class:`~bioim2im.prediction.job.PredictionSummary`.
- :func:`postprocess`: a head's postprocessing over saved predictions.
- :func:`evaluate`: predictions against ground truth; an
  :class:`~bioim2im.evaluation.EvaluationReport` (or a plugin task's report).
- :func:`export`: a run as a bioimage.io package, a TorchScript or an ONNX file; an
  :class:`~bioim2im.formats.export.ExportResult`.
- :func:`load_preset`, :func:`check`: read, resolve and validate a preset;
  :func:`list_presets`, :func:`presets`, :func:`show_preset`: the presets that can be named;
  :func:`options`, :func:`schema`, :func:`list_plugins`: the keys and components there are.
- :func:`validation_images`: the validation images of a run directory, with their targets.
- :func:`demo`: the whole workflow on synthetic data.

Each command's options are written once, on these functions' parameters
(:mod:`bioim2im.api.options`). Front ends (a GUI, a notebook) follow and stop the long calls
through keyword-only callbacks: ``on_progress`` (blocks predicted), ``on_metrics`` (each logged
training record) and ``should_stop`` (asked after every training step); they run in the calling
process only.

Every mistake of the caller's (a bad preset value, a missing file) is raised as a
:class:`UserError` whose text is the one message the command line prints.

The model a prediction uses is named ``model`` everywhere: a run directory (its best checkpoint),
a checkpoint file, or an exported model (a bioimage.io package, an ONNX or TorchScript file).
Heavy libraries are imported by the functions that need them, so ``import bioim2im`` stays light.
"""

from bioim2im.api.demo import DemoResult, demo
from bioim2im.api.evaluation import evaluate
from bioim2im.api.export import export
from bioim2im.api.prediction import PostprocessResult, postprocess, predict, predict_files
from bioim2im.api.presets import (
    CheckResult,
    check,
    list_plugins,
    list_presets,
    load_preset,
    options,
    presets,
    schema,
    show_preset,
)
from bioim2im.api.training import (
    RESULT_FILE,
    RUN_MARKER,
    TrainResult,
    ValidationImage,
    train,
    validation_images,
)
from bioim2im.errors import UserError

__all__ = [
    "RESULT_FILE",
    "RUN_MARKER",
    "CheckResult",
    "DemoResult",
    "PostprocessResult",
    "TrainResult",
    "UserError",
    "ValidationImage",
    "check",
    "demo",
    "evaluate",
    "export",
    "list_plugins",
    "list_presets",
    "load_preset",
    "options",
    "postprocess",
    "predict",
    "predict_files",
    "presets",
    "schema",
    "show_preset",
    "train",
    "validation_images",
]
