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
