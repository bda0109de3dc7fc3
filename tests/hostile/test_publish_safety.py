"""Issue 11, point 2: ``evaluate --json PATH`` / ``--csv PATH`` replaced PATH even when it was
a directory, deleting everything in it, and exited 0. A directory target is refused (exit 2)
and nothing is deleted; an existing report file is replaced only with ``--overwrite``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile_helpers import (
    assert_ok,
    assert_user_error,
    changes,
    error_lines,
    invoke,
    snapshot,
)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder of the user's that must survive."""
    folder = tmp_path / "results"
    (folder / "nested").mkdir(parents=True)
    (folder / "keep.txt").write_text("months of work", encoding="utf-8")
    (folder / "nested" / "more.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_a_directory_as_report_target_is_refused_and_kept(
    nuclei_data: Path, victim: Path, option: str
) -> None:
    before = snapshot(victim.parent)
    result = invoke("evaluate", "-p", nuclei_data / "GT", "-t", nuclei_data / "GT", option, victim)
    assert changes(before, snapshot(victim.parent)) == []
    assert_user_error(result, option[2:], str(victim))


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_the_working_directory_as_report_target_is_refused(
    nuclei_data: Path, victim: Path, option: str
) -> None:
    before = snapshot(victim.parent)
    result = invoke(
        "evaluate", "-p", nuclei_data / "GT", "-t", nuclei_data / "GT", option, ".", cwd=victim
    )
    assert changes(before, snapshot(victim.parent)) == []
    assert_user_error(result, option[2:])


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_a_report_under_a_regular_file_names_the_path(
    nuclei_data: Path, tmp_path: Path, option: str
) -> None:
    """A parent that is a file (the root-proof twin of an unwritable folder): one message
    naming the path and the OS's cause, no traceback, the file untouched."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder", encoding="utf-8")
    before = snapshot(tmp_path)
    target = blocker / f"report.{option[2:]}"
    result = invoke("evaluate", "-p", nuclei_data / "GT", "-t", nuclei_data / "GT", option, target)
    assert changes(before, snapshot(tmp_path)) == []
    assert result.code in (1, 2), result
    assert "Traceback" not in result.err and len(error_lines(result.err)) == 1, result
    assert "notes.txt" in result.err and "not a directory" in result.err.lower(), result


def test_report_files_are_written_and_an_old_report_file_is_replaced_only_with_overwrite(
    nuclei_data: Path, tmp_path: Path
) -> None:
    json_path, csv_path = tmp_path / "report.json", tmp_path / "report.csv"
    json_path.write_text("old", encoding="utf-8")
    args = ["evaluate", "-p", nuclei_data / "GT", "-t", nuclei_data / "GT"]
    refused = invoke(*args, "--json", json_path, "--csv", csv_path)
    assert_user_error(refused, str(json_path), "--overwrite")
    assert json_path.read_text(encoding="utf-8") == "old" and not csv_path.exists()
    result = invoke(*args, "--json", json_path, "--csv", csv_path, "--overwrite")
    assert_ok(result)
    assert json.loads(json_path.read_text(encoding="utf-8"))
    assert csv_path.read_text(encoding="utf-8").count("\n") >= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv", "report.json"]
