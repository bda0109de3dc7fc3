"""plugins/bioim2im-mlflow, installed for real, reports a training run to a local MLflow
tracking store; what it logged is read back with MLflow's own client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.plugin_helpers import install_plugin, registry_with

import bioim2im
from bioim2im.training.report import read_metrics

pytest.importorskip("mlflow", reason="the dev extra installs mlflow-skinny")


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin("bioim2im-mlflow", tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def plugin_registry(plugin_path: Path) -> Iterator[Any]:
    """The registry a fresh process would build with the plugin installed."""
    with registry_with(plugin_path) as registry:
        yield registry


@pytest.fixture
def with_plugin(plugin_registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from bioim2im.plugin import manager

    monkeypatch.setattr(manager, "get_registry", lambda: plugin_registry)
    # As a user's shell: MLflow's own settings unset (the plugin allows its file store).
    for variable in ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(variable, raising=False)


def test_the_plugin_is_discovered_through_its_entry_point(plugin_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bioim2im", "list-plugins", "--kind", "logger", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(plugin_path)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["mlflow"]["package"] == "bioim2im-mlflow"
    assert rows["tensorboard"]["package"] == "bioim2im"


def test_a_run_is_recorded_and_a_resumed_run_continues_it(
    with_plugin: None, tiny_preset, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    preset = tiny_preset(
        f'[[logging.loggers]]\nname = "mlflow"\ntracking_uri = "{store}"\nexperiment = "nuclei"\n'
        'tags = { project = "test" }\n'
    )
    run = tmp_path / "run"
    bioim2im.train(preset, overrides=["train.steps=6", "train.val_every=6"], run_dir=run)

    client = MlflowClient(tracking_uri=store)
    (recorded,) = client.search_runs([client.get_experiment_by_name("nuclei").experiment_id])
    run_id = recorded.info.run_id
    assert json.loads((run / "mlflow.json").read_text())["run_id"] == run_id
    assert recorded.info.status == "FINISHED"
    assert recorded.info.run_name == "run"
    assert recorded.data.tags["project"] == "test"
    params = recorded.data.params
    assert params["data.patch_size"] == "[32, 32]"
    assert params["model.backbone.name"] == "unet"
    assert params["train.optimizer.lr"] == "0.01"
    logged = read_metrics(run / "metrics.jsonl")
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [
        (r["step"], pytest.approx(r["loss"])) for r in logged if "loss" in r
    ]
    assert client.get_metric_history(run_id, "loss.seg")  # loss/seg
    dice = client.get_metric_history(run_id, "val.seg.dice")
    assert [m.step for m in dice] == [6]
    files = {f.path for f in client.list_artifacts(run_id)}
    assert {"preset.toml", "metrics.jsonl", "loss_curve.png", "result.json", "checkpoints",
            "snapshots"} <= files  # fmt: skip
    assert [f.path for f in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/best.pt"]
    assert [f.path for f in client.list_artifacts(run_id, "snapshots")] == [
        "snapshots/step_0000006.png"
    ]

    bioim2im.train(resume=run, overrides=["train.steps=8"])
    (continued,) = client.search_runs([recorded.info.experiment_id])
    assert continued.info.run_id == run_id and continued.info.status == "FINISHED"
    assert continued.data.tags["bioim2im.resumed_from_step"] == "6"
    assert [m.step for m in client.get_metric_history(run_id, "loss")][-1] == 8


def test_a_store_that_cannot_be_used_stops_the_run_before_training(
    with_plugin: None, tiny_preset, tmp_path: Path, cli
) -> None:
    preset = tiny_preset('[[logging.loggers]]\nname = "mlflow"\ntracking_uri = "nosuch://x"\n')
    result = cli("train", preset, "--run-dir", tmp_path / "run")
    assert result.code == 2
    assert result.err.startswith("error: logger 'mlflow': cannot use the tracking store nosuch://x")
    assert "Traceback" not in result.err
    assert not (tmp_path / "run").exists()


def test_the_defaults_work_with_the_plugins_own_dependency(
    with_plugin: None, tiny_preset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No tracking_uri and no MLflow variables: the file store ./mlruns (MLflow's own default,
    sqlite, needs SQLAlchemy, which mlflow-skinny lacks), recorded by its absolute URI."""
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    preset = tiny_preset('[[logging.loggers]]\nname = "mlflow"\n')
    run = tmp_path / "run"
    bioim2im.train(preset, overrides=["train.steps=2", "train.val_every=2"], run_dir=run)
    store = (work / "mlruns").as_uri()
    assert json.loads((run / "mlflow.json").read_text())["tracking_uri"] == store
    client = MlflowClient(tracking_uri=store)
    (recorded,) = client.search_runs([client.get_experiment_by_name("bioim2im").experiment_id])
    assert recorded.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(recorded.info.run_id, "loss")][-1] == 2


def test_a_database_store_without_sqlalchemy_says_what_to_install(
    with_plugin: None, tiny_preset, tmp_path: Path, cli
) -> None:
    pytest.importorskip("mlflow")
    try:
        import sqlalchemy  # noqa: F401

        pytest.skip("SQLAlchemy is installed: the database store works")
    except ImportError:
        pass
    db = (tmp_path / "mlflow.db").as_posix()
    preset = tiny_preset(f'[[logging.loggers]]\nname = "mlflow"\ntracking_uri = "sqlite:///{db}"\n')
    result = cli("train", preset, "--run-dir", tmp_path / "run")
    assert result.code == 2 and "Traceback" not in result.err
    assert "pip install sqlalchemy alembic" in result.err
    assert not (tmp_path / "run").exists()
