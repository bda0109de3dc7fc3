"""No CellMap command deletes or replaces a path it did not create: `cellmap pack` and `cellmap
datasplit` pointed at the user's files, or at their own inputs, are refused with one message
and leave the workspace (see bioim2im's hostile-input tests) exactly as they found it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_helpers import (
    Workspace,
    assert_user_error,
    fingerprint,
    invoke,
    lost_or_changed,
    make_workspace,
)


@pytest.fixture
def workspace(tmp_path: Path, trained_run: Path, nuclei_data: Path) -> Workspace:
    return make_workspace(tmp_path, trained_run, nuclei_data)


Args = Callable[[Workspace], list[str | Path]]

# (id, arguments, what the one message names)
REFUSED: list[tuple[str, Args, str]] = [
    # pack, datasplit: an existing file without --overwrite
    (
        "pack-over-a-user-file",
        lambda w: [
            "cellmap",
            "pack",
            w.zarr_folder,
            "--crops",
            w.user / "sub" / "table.csv",
            "-o",
            w.user / "x.zip",
        ],
        "x.zip",
    ),
    (
        "pack-into-its-predictions",
        lambda w: [
            "cellmap",
            "pack",
            w.zarr_folder,
            "--crops",
            w.user / "sub" / "table.csv",
            "-o",
            w.zarr_folder / "submission.zip",
            "--overwrite",
        ],
        "images",
    ),
    (
        "datasplit-over-a-user-file",
        lambda w: [
            "cellmap",
            "datasplit",
            str(w.root / "data/{dataset}/{crop}"),
            "--classes",
            "mito",
            "-o",
            w.user / "sub" / "table.csv",
        ],
        "table.csv",
    ),
]


@pytest.mark.parametrize(("args", "mention"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_command_aimed_at_what_it_did_not_create_is_refused_and_changes_nothing(
    workspace: Workspace, args: Args, mention: str
) -> None:
    if "x.zip" in mention:
        (workspace.user / "x.zip").write_bytes(b"PK not really")
    before = fingerprint(workspace.root)
    result = invoke(*args(workspace), cwd=workspace.root)
    assert_user_error(result, mention)
    after = fingerprint(workspace.root)
    assert lost_or_changed(before, after) == []
    assert sorted(set(after) - set(before)) == [], "a refused command wrote something"
