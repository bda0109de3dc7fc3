"""The MLflow logger: one MLflow run per bioim2im run directory, continued on resume."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from bioim2im.errors import UserError

RECORD = "mlflow.json"
"""In the run directory: the tracking store and run id, so a resumed run continues that run."""

STATUS = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
# MLflow's limits on one parameter, and on one batch.
MAX_KEY, MAX_VALUE, PARAMS_PER_BATCH, METRICS_PER_BATCH = 250, 6000, 100, 1000


DEFAULT_STORE = "mlruns"
"""The default tracking store: MLflow's file store in this folder of the working directory."""
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
"""Schemes of MLflow's database stores, which need SQLAlchemy (not part of mlflow-skinny)."""


def tracking_store(tracking_uri: str | None) -> str:
    """The store a run reports to: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the file
    store ``./mlruns``. A file store is named by its absolute ``file:`` URI (so that a run
    resumed from another folder finds it), and allowed: MLflow 3 refuses file stores unless
    ``MLFLOW_ALLOW_FILE_STORE`` is true, and its own default, ``sqlite:///mlflow.db``, needs
    SQLAlchemy, which mlflow-skinny (this plugin's dependency) does not install."""
    import os

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE
    parts = urlsplit(uri)
    if parts.scheme == "file" or not parts.scheme or len(parts.scheme) == 1:  # C:\... too
        path = Path(parts.path) if parts.scheme == "file" else Path(uri)
        if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
            return uri  # a file share named by host: left as given
        uri = path.expanduser().resolve().as_uri()
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return uri


class MlflowLogger:
    def __init__(
        self,
        run_dir: Path,
        preset: dict[str, Any],
        start_step: int,
        *,
        tracking_uri: str | None,
        experiment: str,
        run_name: str | None,
        checkpoints: str,
        tags: dict[str, str],
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run_dir)
        self.checkpoints = checkpoints
        uri = tracking_store(tracking_uri)
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id = self._continued(uri, start_step) or self._new_run(
                uri, experiment, run_name or self.run_dir.name, tags, preset
            )
        except UserError:
            raise
        except Exception as exc:
            hint = ""
            if urlsplit(uri).scheme in DATABASES:
                hint = (
                    " (a database store needs SQLAlchemy, which mlflow-skinny does not install: "
                    "pip install sqlalchemy alembic; or leave tracking_uri unset for the file "
                    "store ./mlruns, or use a tracking server)"
                )
            raise UserError(
                f"logger 'mlflow': cannot use the tracking store {_public(uri)}: "
                f"{_first_line(exc)}{hint}"
            ) from None

    def _continued(self, uri: str, start_step: int) -> str | None:
        """The run a resumed training continues, when its record names this store."""
        if start_step == 0:
            return None
        try:
            record = json.loads((self.run_dir / RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("tracking_uri") != uri:
            return None
        run_id = str(record.get("run_id"))
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, "bioim2im.resumed_from_step", str(start_step))
        return run_id

    def _new_run(
        self, uri: str, experiment: str, name: str, tags: dict[str, str], preset: dict[str, Any]
    ) -> str:
        from mlflow.entities import Param

        from bioim2im.io.atomic import write_text

        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id if found is not None else self.client.create_experiment(experiment)
        )
        run_tags = {"bioim2im.run_dir": str(self.run_dir.resolve()), **tags}
        run = self.client.create_run(experiment_id, run_name=name, tags=run_tags)
        run_id: str = run.info.run_id
        params = [Param(key, value) for key, value in flatten(preset)]
        for start in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=params[start : start + PARAMS_PER_BATCH])
        record = {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": run_id}
        write_text(self.run_dir / RECORD, json.dumps(record, indent=2) + "\n")
        return run_id

    def log_metrics(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_name(key), float(v), now, step) for key, v in values.items()]
        for start in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + METRICS_PER_BATCH])

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        self.client.log_image(self.run_id, image, artifact_file=f"{name}s/step_{step:07d}.png")

    def close(self, status: str) -> None:
        for path in self._artifacts():
            folder = path.parent.relative_to(self.run_dir).as_posix()
            self.client.log_artifact(
                self.run_id, str(path), artifact_path=None if folder == "." else folder
            )
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FINISHED"))

    def _artifacts(self) -> Iterator[Path]:
        """The run directory's files, less caches, temporaries, the snapshots (uploaded as they
        were written) and the checkpoints not asked for."""
        for path in sorted(self.run_dir.rglob("*")):
            parts = path.relative_to(self.run_dir).parts
            if not path.is_file() or any(p.startswith(".") for p in parts):
                continue
            if parts[0] in ("cache", "snapshots") or path.name == RECORD:
                continue
            if parts[0] == "checkpoints" and not (
                self.checkpoints == "all" or (self.checkpoints == "best" and path.name == "best.pt")
            ):
                continue
            yield path


def metric_name(key: str) -> str:
    """``val/seg/dice`` -> ``val.seg.dice``: MLflow's file store keeps a metric per file, so
    ``loss`` and ``loss/seg`` cannot both be metrics there; dots work in every store."""
    return key.replace("/", ".")


def flatten(preset: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, value as text) of every preset value; lists as JSON; credentials in URLs
    left out."""
    for key, value in preset.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{name}.")
            continue
        text = value if isinstance(value, str) else json.dumps(_public_values(value))
        yield name[:MAX_KEY], _public(text)[:MAX_VALUE]


def _public_values(value: Any) -> Any:
    if isinstance(value, str):
        return _public(value)
    if isinstance(value, list):
        return [_public_values(v) for v in value]
    if isinstance(value, dict):
        return {k: _public_values(v) for k, v in value.items()}
    return value


def _public(text: str) -> str:
    """A URL without its user name and password (they must not end up in a tracking store)."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
