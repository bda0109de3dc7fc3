"""bioim2im plugin: MLflow experiment tracking (a ``logger`` component named ``mlflow``).

Light at import: MLflow is imported when a run starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from bioim2im.plugin.hookspecs import hookimpl


def mlflow(
    *,
    run_dir: Path,
    preset: dict[str, Any],
    start_step: int,
    tracking_uri: str | None = None,
    experiment: str = "bioim2im",
    run_name: str | None = None,
    checkpoints: Literal["best", "all", "none"] = "best",
    tags: dict[str, str] | None = None,
) -> Any:
    """MLflow: the resolved preset as parameters, metrics, snapshots and the run's files.

    Args:
        tracking_uri: The tracking server or store, e.g. "http://127.0.0.1:5000", a folder
            ("mlruns", "file:///data/mlruns": MLflow's file store) or "sqlite:///mlflow.db"
            (needs SQLAlchemy); default: MLFLOW_TRACKING_URI, else the folder "mlruns" of the
            working directory.
        experiment: The experiment the run is filed under; created when missing.
        run_name: The run's name in MLflow; default: the run directory's name.
        checkpoints: Which checkpoints to upload when the run ends: "best" (best.pt), "all"
            (every .pt file) or "none".
        tags: Tags set on the run.
    """
    from bioim2im_mlflow._logger import MlflowLogger

    return MlflowLogger(
        run_dir,
        preset,
        start_step,
        tracking_uri=tracking_uri,
        experiment=experiment,
        run_name=run_name,
        checkpoints=checkpoints,
        tags=dict(tags or {}),
    )


@hookimpl
def bioim2im_register_loggers(registry: Any) -> None:
    registry.add("mlflow", mlflow)
