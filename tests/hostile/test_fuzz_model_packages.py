"""Fuzz: bioimage.io packages exported by bioim2im, then changed: any field of the description
replaced (hostile paths and URLs among the values) or removed, any file of the package damaged
or removed, given as a folder, a zip or its rdf.yaml. ``predict`` ends with exit 0, or exit 2
and one message without a traceback; it changes nothing outside its output and reaches no
server."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hostile_helpers import changes, ended_cleanly, examples, invoke, snapshot
from hostile_models import zip_folder
from hypothesis import event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

HOSTILE_STRINGS = [
    "../../outside.onnx",
    "/etc/passwd",
    "http://127.0.0.1:9/weights.onnx",
    "file:///etc/passwd",
    "weights.pt",
    "weights.onnx",
    "weights_torchscript.pt",
    "preset.toml",
    "rdf.yaml",
    "",
    "bioim2im.model.packaged",
    "os.system",
    "PackagedNetwork",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, 1, -1, 2, 3]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(HOSTILE_STRINGS),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(table: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key or index of a nested description, outermost first."""
    found: list[tuple[Any, ...]] = []
    items = (
        table.items()
        if isinstance(table, dict)
        else enumerate(table)
        if isinstance(table, list)
        else []
    )
    for key, value in items:
        found.append((*prefix, key))
        found += paths(value, (*prefix, key))
    return found


INTERESTING = ("weights", "attachments", "config", "inputs", "outputs")
"""Where the description says which files to read and how tensors are shaped."""


@st.composite
def description_changes(draw: st.DrawFn, rdf: dict[str, Any]) -> list[tuple[tuple[Any, ...], Any]]:
    """One to three (path, new value) changes; a new value of ``...`` removes the entry.
    Half of them where the description names files, shapes tensors or configures bioim2im."""
    where = paths(rdf)
    interesting = [p for p in where if p[0] in INTERESTING]
    chosen = draw(
        st.lists(st.sampled_from(interesting) | st.sampled_from(where), min_size=1, max_size=3)
    )
    new = st.one_of(st.just(...), st.sampled_from(HOSTILE_STRINGS), values)
    return [(path, draw(new)) for path in chosen]


def apply(rdf: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = rdf
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return  # an earlier change removed or replaced what held it
    if not isinstance(node, (dict, list)):
        return
    key = path[-1]
    try:
        if value is ...:
            del node[key]
        else:
            node[key] = value
    except (KeyError, IndexError, TypeError):
        return


FILES = [
    "weights.onnx",
    "weights.pt",
    "weights_torchscript.pt",
    "preset.toml",
    "rdf.yaml",
    "README.md",
]


@st.composite
def file_damage(draw: st.DrawFn) -> tuple[str, str, bytes]:
    name = draw(st.sampled_from(FILES))
    how = draw(st.sampled_from(["remove", "empty", "random", "truncate"]))
    return name, how, draw(st.binary(max_size=256))


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []
    original = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(repr(address))
            raise OSError("network access while predicting from a package")
        original(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


@hsettings(max_examples=examples(10))
@given(data=st.data(), form=st.sampled_from(["folder", "zip", "rdf.yaml"]))
def test_predict_from_a_changed_package(
    exported_package: Path, one_image: Path, no_network: list[str], data: st.DataObject, form: str
) -> None:
    from bioimageio.spec._internal._settings import settings

    with scratch() as folder:
        package = Path(shutil.copytree(exported_package, folder / "package"))
        rdf = yaml.safe_load((package / "rdf.yaml").read_text(encoding="utf-8"))
        if data.draw(st.booleans(), label="change the description"):
            for path, value in data.draw(description_changes(rdf), label="changes"):
                apply(rdf, path, value)
            (package / "rdf.yaml").write_text(yaml.safe_dump(rdf), encoding="utf-8")
        else:
            name, how, noise = data.draw(file_damage(), label="damage")
            target = package / name
            if how == "remove":
                target.unlink()
            elif how == "truncate":
                target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
            else:
                target.write_bytes(b"" if how == "empty" else noise)
        model: Path = package
        if form == "zip":
            model = zip_folder(package, folder / "model.zip")
        elif form == "rdf.yaml":
            model = package / "rdf.yaml"
        out = folder / "out"
        cache = folder / "bioimageio-cache"
        saved = settings.cache_path
        settings.cache_path = cache
        before = snapshot(folder, exported_package, one_image.parent)
        try:
            result = invoke("predict", model, "-i", one_image, "-o", out)
        finally:
            settings.cache_path = saved
        event(f"exit {result.code}")
        assert ended_cleanly(result), f"{form}\n{result}"
        assert (
            changes(before, snapshot(folder, exported_package, one_image.parent), allowed=[out])
            == []
        )
        assert no_network == []
