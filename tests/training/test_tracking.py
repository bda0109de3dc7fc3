"""Experiment tracking: TensorBoard events read back with TensorBoard's own reader, periodic
checkpoints kept, logger plugins told everything and dropped (not fatal) when they fail."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import bioim2im
from bioim2im.model.checkpoint import load_checkpoint
from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.training.report import read_metrics
from tiny_presets import DROP, tiny_unet_toml

TRACKED = """
[train]
steps = 12
log_every = 2
val_every = 6
checkpoint_every = 3
keep_checkpoints = 2
[logging]
tensorboard = true
"""


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory, nuclei_data: Path) -> Path:
    from tests.training.conftest import TRAINING

    root = tmp_path_factory.mktemp("tracked")
    preset = root / "tracked.toml"
    # The training tests' tiny preset with TRACKED's [train] and [logging] instead of its own.
    changes = {**TRAINING, "train": DROP, "logging": DROP}
    preset.write_text(tiny_unet_toml(nuclei_data, changes) + TRACKED)
    bioim2im.train(preset, run_dir=root / "run")
    return root / "run"


def _events(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_holds_every_logged_value_and_the_snapshots(tracked_run: Path) -> None:
    events = _events(tracked_run / "tensorboard")
    logged = read_metrics(tracked_run / "metrics.jsonl")
    for key in ("loss", "lr", "val/loss", "val/seg/dice"):
        expected = [(r["step"], r[key]) for r in logged if r.get(key) is not None]
        assert expected, key
        got = events.Scalars(key)
        assert [e.step for e in got] == [step for step, _ in expected], key
        assert [e.value for e in got] == pytest.approx([v for _, v in expected], rel=1e-6), key
    images = events.Images("snapshot")
    assert [i.step for i in images] == [6, 12]
    from PIL import Image

    png = np.asarray(Image.open(tracked_run / "snapshots" / "step_0000012.png"))
    assert (images[-1].height, images[-1].width) == png.shape


def test_keep_checkpoints_keeps_the_most_recent_periodic_ones(tracked_run: Path) -> None:
    folder = tracked_run / "checkpoints"
    assert sorted(p.name for p in folder.glob("step_*.pt")) == [
        "step_0000009.pt",
        "step_0000012.pt",
    ]
    assert load_checkpoint(folder / "step_0000009.pt")["step"] == 9
    # A periodic checkpoint is a model like any other.
    image = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    assert bioim2im.predict(folder / "step_0000009.pt", image)["seg"].shape == (1, 32, 32)


def test_check_says_when_tensorboard_is_missing(
    cli, write_preset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bioim2im.builtins import loggers

    monkeypatch.setattr(loggers, "tensorboard_installed", lambda: False)
    preset = write_preset('extends = "segmentation-2d"\n[logging]\ntensorboard = true\n')
    result = cli("check", preset)
    assert result.code == 2
    assert "logging.tensorboard (logger 'tensorboard'): needs the tensorboard package" in result.err
    assert "pip install 'bioim2im[tensorboard]'" in result.err


class _Recorder:
    calls: ClassVar[list[tuple[Any, ...]]] = []

    def __init__(self, run_dir: Path, preset: dict[str, Any], start_step: int, fail: bool) -> None:
        self.fail = fail
        self.calls.append(("open", fail, run_dir, preset["train"]["steps"], start_step))

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        if self.fail:
            raise ConnectionError("tracking server gone")
        self.calls.append(("metrics", step, dict(values)))

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        self.calls.append(("image", step, name, image.shape, image.dtype))

    def close(self, status: str) -> None:
        self.calls.append(("close", self.fail, status))


def recorder(*, run_dir: Path, preset: dict[str, Any], start_step: int, fail: bool = False) -> Any:
    """A logger that records what it is told."""
    return _Recorder(run_dir, preset, start_step, fail)


@pytest.fixture
def with_recorder(monkeypatch: pytest.MonkeyPatch) -> type[_Recorder]:
    from bioim2im.plugin import manager

    plugin = types.ModuleType("bioim2im_recorder")

    @hookimpl
    def bioim2im_register_loggers(registry: Any) -> None:
        registry.add("recorder", recorder)

    plugin.bioim2im_register_loggers = bioim2im_register_loggers  # type: ignore[attr-defined]
    registry = manager.build_registry([*manager.discover(), (plugin, "bioim2im-recorder", "1")])
    monkeypatch.setattr(manager, "get_registry", lambda: registry)
    _Recorder.calls = []
    return _Recorder


def test_logger_plugins_are_told_everything_and_a_failing_one_is_dropped(
    tiny_preset, tmp_path: Path, with_recorder: type[_Recorder], capsys
) -> None:
    preset = tiny_preset(
        '[[logging.loggers]]\nname = "recorder"\n[[logging.loggers]]\nname = "recorder"\n'
        "fail = true\n"
    )
    run = tmp_path / "run"
    result = bioim2im.train(preset, overrides=["train.steps=6", "train.val_every=6"], run_dir=run)
    assert result.step == 6  # the failing logger did not stop training
    calls = with_recorder.calls
    assert calls[:2] == [("open", False, run, 6, 0), ("open", True, run, 6, 0)]
    assert calls[-1] == ("close", False, "finished")
    assert not any(c[:2] == ("close", True) for c in calls)  # dropped: not told again
    logged = read_metrics(run / "metrics.jsonl")
    told = [c[1:] for c in calls if c[0] == "metrics"]
    assert [(step, values["loss"]) for step, values in told if "loss" in values] == [
        (r["step"], r["loss"]) for r in logged if "loss" in r
    ]
    assert [(step, values["val/seg/dice"]) for step, values in told if "val/loss" in values] == [
        (r["step"], r["val/seg/dice"]) for r in logged if "val/loss" in r
    ]
    assert next(c for c in calls if c[0] == "image")[:3] == ("image", 6, "snapshot")
    err = capsys.readouterr().err
    assert err.count("logger 'recorder' failed and is left out") == 1
    assert "ConnectionError: tracking server gone" in err
    assert json.loads((run / "result.json").read_text())["step"] == 6
