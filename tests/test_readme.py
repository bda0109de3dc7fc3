"""Every Python example in the README runs, in a fresh folder, as a user would paste it."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_python_example_runs(
    number: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType(f"readme_example_{number}")
    exec(compile(BLOCKS[number], f"README.md python block {number + 1}", "exec"), module.__dict__)
    if "@hookimpl" in BLOCKS[number]:
        _registers_like_a_plugin(module)


def _registers_like_a_plugin(module: types.ModuleType) -> None:
    """The plugin example registers its components, and a preset can use them."""
    from bioim2im.config import validate
    from bioim2im.plugin.manager import build_registry, discover

    registry = build_registry([*discover(), (module, "bioim2im-mything", "0.1")])
    component = registry.get("backbone", "my_net")
    assert component.package == "bioim2im-mything"
    table = {
        "data": {"patch_size": [32, 32]},
        "model": {
            "backbone": {"name": "my_net", "width": 8},
            "heads": {"seg": {"name": "conv", "loss": {"name": "dice_ce", "sigmoid": True}}},
        },
    }
    preset = validate(table, registry, "the README plugin example")
    assert preset.model.backbone.params() == {"width": 8}


def test_the_readme_installs_bioim2im_only_from_the_repository_or_its_wheels() -> None:
    """bioim2im and its plugins are not published: a `pip install` of them by name from a
    registry finds nothing, so the READMEs (the plugins' too) install them from paths or built
    wheels."""
    import shlex

    root = README.parent
    text = "\n".join(
        p.read_text(encoding="utf-8") for p in [README, *sorted(root.glob("plugins/*/README.md"))]
    )
    by_name = []
    for line in text.splitlines():
        for command in re.findall(r"pip install ([^#&`|;]*)", line):
            for word in shlex.split(command, comments=False, posix=True):
                name = re.split(r"[\[<>=]", word, maxsplit=1)[0]
                if re.fullmatch(r"(bioim2im|napari-bioim2im)(-[a-z]+)?", name):
                    by_name.append(word)
    assert by_name == [], f"the README installs {by_name} from a registry"
