"""Issue 11, point 1: no preset value reaches an import, ``eval`` or a call by name.

The `monai` transform used to hand any MONAI dictionary transform any arguments; MONAI's
``LoadImaged`` resolves a string ``reader`` by dotted path and calls it, so a preset could run
a shell command during ``bioim2im check --data``. Only an allowlist of random / intensity /
spatial transforms may be named, and string arguments that look like dotted paths are refused.

The general promise is tested with a probe: a module ``hostile_probe`` on the import path
whose import, or a call of ``hostile_probe.boom``, writes a marker file. Its names are put into
every string a preset can hold; the marker must never appear.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_helpers import (
    assert_ok,
    assert_user_error,
    ended_cleanly,
    examples,
    invoke,
    read_toml,
    replaced,
    string_leaves,
    toml_document,
)
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

PROBES = ("hostile_probe.boom", "hostile_probe:boom")

PROBE_MODULE = '''
"""Imported or called only if a preset value reached an import or a call by name."""
import os
import pathlib

pathlib.Path(os.environ["HOSTILE_PROBE_MARKER"]).write_text("imported", encoding="utf-8")


def boom(*args, **kwargs):
    pathlib.Path(os.environ["HOSTILE_PROBE_MARKER"]).write_text("called", encoding="utf-8")
    return 0


class Boom:
    def __init__(self, *args, **kwargs):
        boom()
'''


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    (folder / "hostile_probe.py").write_text(PROBE_MODULE, encoding="utf-8")
    return folder


@pytest.fixture
def probe(probe_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """The probe importable by this process (and by processes it starts); yields the marker
    file that must never appear."""
    marker = tmp_path / "PROBE_WAS_REACHED"
    saved_path, saved_env = list(sys.path), dict(os.environ)
    sys.path.insert(0, str(probe_dir))
    os.environ["HOSTILE_PROBE_MARKER"] = str(marker)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(probe_dir), saved_env.get("PYTHONPATH", "")) if p
    )
    try:
        yield marker
    finally:
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)
        sys.modules.pop("hostile_probe", None)


def assert_probe_untouched(marker: Path, what: str) -> None:
    reached = marker.exists() or "hostile_probe" in sys.modules
    sys.modules.pop("hostile_probe", None)
    if marker.exists():
        marker.unlink()
    assert not reached, f"a preset value reached an import or a call by name: {what}"


def monai_preset(tiny_preset, transform: str, args: dict) -> Path:
    entry = {"name": "monai", "transform": transform, "args": args}
    text = tiny_preset().read_text(encoding="utf-8")
    text = text.replace("augment = []", f"augment = [{_inline(entry)}]")
    path = tiny_preset().with_name("monai.toml")
    path.write_text(text, encoding="utf-8")
    return path


def _inline(value: object) -> str:
    return toml_document({"x": value}).split(" = ", 1)[1].strip()


# ---- the reproduced attack ------------------------------------------------------------------
@pytest.mark.parametrize("command", ["check", "train"])
def test_monai_load_image_with_os_system_runs_no_command(
    tiny_preset, tmp_path: Path, in_tmp: Path, command: str
) -> None:
    owned = tmp_path / "owned.txt"
    preset = monai_preset(
        tiny_preset, "LoadImaged", {"reader": "os.system", "command": f"id > {owned}"}
    )
    args = ["check", "--data", preset] if command == "check" else ["train", preset]
    args += ["--set", "train.steps=2"] if command == "train" else []
    result = invoke(*args)
    assert not owned.exists(), "the preset ran a shell command"
    assert_user_error(result, "LoadImaged")


@pytest.mark.parametrize(
    "transform",
    [
        "LoadImaged",  # resolves `reader` by dotted path
        "SaveImaged",  # writes files; resolves `writer` by dotted path
        "Lambdad",  # calls a function
        "RandLambdad",  # random, yet calls a function
        "RandTorchVisiond",  # looks a torchvision transform up by name
        "RandCuCIMd",  # looks a cuCIM function up by name
        "DataStatsd",  # logs (and may write) data statistics
    ],
)
def test_transform_outside_the_allowlist_is_refused(tiny_preset, transform: str) -> None:
    result = invoke("check", "--data", monai_preset(tiny_preset, transform, {}))
    assert_user_error(result, transform)
    # The message says what may be used instead: the allowed transforms' names.
    assert re.search(r"Rand\w+d\b", result.err.replace(transform, "")), result


@pytest.mark.parametrize(
    ("transform", "args"),
    [
        ("RandGaussianSmoothd", {"prob": 1.0}),
        ("RandRotated", {"range_x": 0.5, "prob": 1.0}),
        ("RandScaleIntensityd", {"factors": 0.2, "prob": 1.0}),
    ],
)
def test_allowed_monai_transforms_still_work(
    tiny_preset, in_tmp: Path, transform: str, args: dict
) -> None:
    preset = monai_preset(tiny_preset, transform, args)
    assert_ok(invoke("check", "--data", preset))
    assert_ok(invoke("train", preset, "--run-dir", in_tmp / "run", "--set", "train.steps=2"))


@pytest.mark.parametrize(
    ("transform", "argument", "value"),
    [
        ("RandRotated", "mode", "builtins.eval"),
        ("RandZoomd", "padding_mode", "os.system"),
        ("RandGaussianSmoothd", "approx", "hostile_probe.boom"),
    ],
)
def test_dotted_path_strings_in_transform_arguments_are_refused(
    tiny_preset, probe: Path, transform: str, argument: str, value: str
) -> None:
    preset = monai_preset(tiny_preset, transform, {"prob": 1.0, argument: value})
    result = invoke("check", "--data", preset)
    assert_probe_untouched(probe, f"{transform}({argument}={value!r})")
    assert_user_error(result, argument)


# ---- the probe in every string of every shipped preset --------------------------------------
def shipped_presets() -> list[str]:
    result = invoke("list-plugins", "--kind", "preset", "--json")
    assert_ok(result)
    return sorted(row["name"] for row in json.loads(result.out))


def test_no_shipped_preset_string_reaches_an_import(
    tmp_path: Path, in_tmp: Path, nuclei_data: Path, probe: Path
) -> None:
    """Every string of every shipped preset (as `check` resolves it: names, modes, paths,
    component parameters) replaced by the probe's names: `check` imports nothing."""
    tried = 0
    for name in shipped_presets():
        base = tmp_path / f"{name}.toml"
        base.write_text(f'extends = "{name}"\n[data]\npath = "{nuclei_data}"\n', encoding="utf-8")
        result = invoke("check", base)
        assert_ok(result)
        table = read_toml(result.out)
        leaves = [*string_leaves(table), (("extends",), name)]
        for index, (path, _) in enumerate(leaves):
            value = PROBES[index % 2]
            document = tmp_path / f"{name}-probe.toml"
            document.write_text(toml_document(replaced(table, path, value)), encoding="utf-8")
            result = invoke("check", document)
            assert_probe_untouched(probe, f"preset {name}: {'.'.join(map(str, path))} = {value!r}")
            assert ended_cleanly(result), f"{name} {path}\n{result}"
            tried += 1
    assert tried > 100


def test_no_string_of_a_trainable_preset_reaches_an_import(
    tiny_preset, tmp_path: Path, in_tmp: Path, probe: Path
) -> None:
    """The tiny preset's strings replaced one by one: `check --data` imports nothing, and where
    the value passes, building every component (one training step) imports nothing either."""
    table = read_toml(invoke("check", tiny_preset()).out)
    trained = 0
    for path, _ in string_leaves(table):
        for value in PROBES:
            document = tmp_path / "probe.toml"
            document.write_text(toml_document(replaced(table, path, value)), encoding="utf-8")
            what = f"{'.'.join(map(str, path))} = {value!r}"
            result = invoke("check", "--data", document)
            assert_probe_untouched(probe, what)
            assert ended_cleanly(result), f"{what}\n{result}"
            if result.code == 0:
                run = tmp_path / f"run{trained}"
                result = invoke("train", document, "--run-dir", run, "--set", "train.steps=1")
                assert_probe_untouched(probe, f"train with {what}")
                assert ended_cleanly(result), f"{what}\n{result}"
                trained += 1


@pytest.mark.parametrize("value", PROBES)
@pytest.mark.parametrize(
    "key",
    ["extends", "model.backbone.name", "model.heads.seg.loss.name", "train.optimizer.name"],
)
def test_component_and_preset_names_are_never_imported(
    tiny_preset, probe: Path, key: str, value: str
) -> None:
    if key == "extends":
        preset = tiny_preset().with_name("probe.toml")
        preset.write_text(f'extends = "{value}"\n', encoding="utf-8")
        result = invoke("check", preset)
    else:
        result = invoke("check", tiny_preset(), "--set", f'{key}="{value}"')
    assert_probe_untouched(probe, f"{key} = {value!r}")
    assert_user_error(result)


def _monai_string_arguments() -> list[tuple[str, str]]:
    import monai.transforms as mt

    found = []
    for name in sorted(dir(mt)):
        cls = getattr(mt, name)
        if not (name.endswith("d") and isinstance(cls, type) and issubclass(cls, mt.MapTransform)):
            continue
        for argument, parameter in inspect.signature(cls.__init__).parameters.items():
            if argument in ("self", "keys", "allow_missing_keys", "args", "kwargs"):
                continue
            hint = str(parameter.annotation)
            if isinstance(parameter.default, str) or "str" in hint or "Callable" in hint:
                found.append((name, argument))
    return found


MONAI_STRING_ARGUMENTS = _monai_string_arguments()


@hsettings(max_examples=examples(12, len(MONAI_STRING_ARGUMENTS) * 2))
@given(st.sampled_from(MONAI_STRING_ARGUMENTS), st.sampled_from(PROBES))
def test_no_monai_transform_argument_reaches_an_import(
    tiny_preset, probe: Path, transform_argument: tuple[str, str], value: str
) -> None:
    """Any MONAI dictionary transform, any of its string arguments set to the probe: refused
    or harmless, never imported or called."""
    transform, argument = transform_argument
    preset = monai_preset(tiny_preset, transform, {argument: value})
    result = invoke("check", "--data", preset)
    assert_probe_untouched(probe, f"{transform}({argument}={value!r})")
    assert ended_cleanly(result), str(result)


# ---- checkpoints --------------------------------------------------------------------------
def evil_checkpoint(path: Path, trained_run: Path) -> Path:
    """A real checkpoint with one extra object that unpickles by calling hostile_probe.boom."""
    import torch

    state = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    # Pickle a reference to hostile_probe.boom without importing the real probe here.
    fake = types.ModuleType("hostile_probe")

    def boom() -> int:
        return 0

    boom.__module__, boom.__qualname__ = "hostile_probe", "boom"
    fake.boom = boom  # type: ignore[attr-defined]

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[()]]:
            return (boom, ())

    sys.modules["hostile_probe"] = fake
    try:
        torch.save({**state, "extra": Payload()}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    finally:
        del sys.modules["hostile_probe"]
    return path


@pytest.mark.parametrize("command", ["predict", "init_from", "resume"])
def test_a_checkpoint_cannot_import_or_call_anything(
    trained_run: Path, tmp_path: Path, tiny_preset, probe: Path, nuclei_data: Path, command: str
) -> None:
    if command == "predict":
        evil = evil_checkpoint(tmp_path / "evil.pt", trained_run)
        result = invoke("predict", evil, "-i", nuclei_data / "IM", "-o", tmp_path / "out")
    elif command == "init_from":
        evil = evil_checkpoint(tmp_path / "evil.pt", trained_run)
        result = invoke(
            "train",
            tiny_preset(),
            "--set",
            f'train.init_from="{evil}"',
            "--run-dir",
            tmp_path / "run",
        )
    else:
        run = tmp_path / "run"
        (run / "checkpoints").mkdir(parents=True)
        (run / "preset.toml").write_text((trained_run / "preset.toml").read_text())
        evil = evil_checkpoint(run / "checkpoints" / "last.pt", trained_run)
        result = invoke("train", "--resume", run)
    assert_probe_untouched(probe, f"{command} of a checkpoint holding a pickled call")
    assert_user_error(result, evil.name)
