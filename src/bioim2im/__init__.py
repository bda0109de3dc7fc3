"""bioim2im: image-to-image deep learning for microscopy.

The package import is light: torch and MONAI load only when a function that needs them runs.
"""

from __future__ import annotations

from typing import Any

from bioim2im._version import __version__

API = (
    "train",
    "predict",
    "predict_files",
    "evaluate",
    "export",
    "load_preset",
    "plan",
    "TrainResult",
    "PlanResult",
)
__all__ = ["__version__", "hookimpl", *API]


def __getattr__(name: str) -> Any:
    if name == "hookimpl":  # what plugin authors decorate their hook functions with
        from bioim2im.plugin.hookspecs import hookimpl

        return hookimpl
    # The Python API lives in bioim2im.api; resolving it lazily keeps `import bioim2im` cheap.
    if name in API:
        from bioim2im import api

        return getattr(api, name)
    raise AttributeError(f"module 'bioim2im' has no attribute {name!r}")
