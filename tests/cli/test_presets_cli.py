"""`bioim2im presets` lists what can be named; `presets show NAME` prints a preset to start from."""

from __future__ import annotations

import json
from pathlib import Path

from bioim2im.config import load_preset

REPO = Path(__file__).resolve().parents[2]


def test_presets_lists_every_shipped_preset_with_description_and_package(cli) -> None:
    result = cli("presets", "--json")
    assert result.code == 0, result.err
    rows = {row["name"]: row for row in json.loads(result.out)}
    assert set(rows) >= {p.stem for p in (REPO / "presets").glob("*.toml")}
    seg = rows["segmentation-2d"]
    assert seg["package"] == "bioim2im"
    assert seg["description"].startswith("Semantic segmentation of 2D images")
    table = cli("presets")
    assert table.code == 0
    assert "instance-3d" in table.out and "Instance segmentation of 3D nuclei" in table.out


def test_presets_show_prints_a_resolved_preset_that_trains_as_a_file(cli, tmp_path: Path) -> None:
    result = cli("presets", "show", "instance-3d", "--set", "train.steps=7")
    assert result.code == 0, result.err
    assert "extends" not in result.out  # merged
    assert "patch_size = [32, 64, 64]" in result.out  # from embedseg-3d, which it extends
    assert 'name = "embedseg_cluster"' in result.out  # from embedseg-2d, which that extends
    mine = tmp_path / "mine.toml"
    mine.write_text(result.out)
    assert load_preset(mine) == load_preset("instance-3d", ["train.steps=7"])


def test_presets_show_as_written_keeps_extends(cli) -> None:
    result = cli("presets", "show", "instance-3d", "--as-written")
    assert result.code == 0, result.err
    assert 'extends = "embedseg-3d"' in result.out


def test_presets_show_unknown_name_is_one_message(cli) -> None:
    result = cli("presets", "show", "segmentaton-2d")
    assert result.code == 2
    assert "no preset named 'segmentaton-2d'; did you mean 'segmentation-2d'?" in result.err
    assert "Traceback" not in result.err and result.out == ""
