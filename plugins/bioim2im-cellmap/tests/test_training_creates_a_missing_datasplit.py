"""Training creates the datasplit its preset names when the file does not exist (as the
toolbox's train does): from the crops under ``data.layout.search_path``, a
``validation_fraction`` of them (0.15 by default) in validation; ``check --data`` shows those
crops without writing anything; with no crop found, one message."""

from __future__ import annotations

from pathlib import Path

from stores import PRESETS
from tiny_runs import shortest_training

from bioim2im_cellmap.datasplit import read_datasplit

SEARCH = "{root}/data/{{dataset}}/{{dataset}}.zarr/recon-1/labels/groundtruth/{{crop}}"


def _overrides(datasplit: Path, search: str) -> list[str]:
    return [
        f"data.path={datasplit}",
        f"data.layout.search_path={search}",
        "data.layout.validation_fraction=0.3",
        'data.layout.classes=["er"]',
        *shortest_training(1),
    ]


def test_check_shows_and_training_writes_the_datasplit(cellmap_root: Path, tmp_path: Path, cli):
    from bioim2im.api import train

    datasplit = tmp_path / "made" / "datasplit.csv"
    search = SEARCH.format(root=cellmap_root)
    sets = [x for o in _overrides(datasplit, search) for x in ("--set", o)]
    checked = cli("check", PRESETS / "cellmap-3d.toml", "--data", *sets)
    assert checked.code == 0, checked.err
    assert "crop1" in checked.err and "crop2" not in checked.err and not datasplit.exists()
    train(
        PRESETS / "cellmap-3d.toml",
        overrides=_overrides(datasplit, search),
        run_dir=tmp_path / "run",
    )
    rows = read_datasplit(datasplit)
    # Crops 1, 3 and 4 annotate er (crop 2 only mito); 0.3 of them validate.
    assert sorted(r.crop_path.rsplit("/", 1)[-1] for r in rows) == ["crop1", "crop3", "crop4"]
    assert sorted(r.usage for r in rows) == ["train", "train", "validate"]
    again = datasplit.read_bytes()
    train(
        PRESETS / "cellmap-3d.toml",
        overrides=_overrides(datasplit, search),
        run_dir=tmp_path / "run2",
    )
    assert datasplit.read_bytes() == again  # an existing datasplit is read, never rewritten


def test_nothing_found_is_one_message(tmp_path: Path, cli):
    datasplit = tmp_path / "datasplit.csv"
    search = SEARCH.format(root=tmp_path / "nowhere")
    sets = [x for o in _overrides(datasplit, search) for x in ("--set", o)]
    result = cli("train", PRESETS / "cellmap-3d.toml", "--run-dir", tmp_path / "run", *sets)
    assert result.code == 2 and result.err.startswith("error:"), result.err
    assert "data.layout.search_path cannot make it: no crop under" in " ".join(result.err.split())
    assert not datasplit.exists()
