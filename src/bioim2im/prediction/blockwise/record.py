"""Which blocks of an output are finished, so an interrupted prediction resumes where it stopped.

One JSON file per output (conventionally ``<partial output>/progress.json``)::

    {"format": "bioim2im-block-progress", "version": 1,
     "plan": {"shape": [...], "roi_size": [...], "overlap": [...], "block_size": [...]},
     "finished": [[0, 12], [14, 15]]}

``finished`` lists half-open ranges of block indices (blocks finish mostly in order, so the file
stays small). A block is recorded only after the sink returned, i.e. after its chunks were
written, and the file is replaced atomically, so a crash never leaves a block marked finished
that is not on disk, nor a half-written file. ``plan`` is
:meth:`~bioim2im.prediction.blockwise.blocks.BlockPlan.fingerprint` (plus whatever the caller adds): block
indices of another plan mean other regions and do not count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bioim2im.io.atomic import atomic_file

FORMAT = "bioim2im-block-progress"
VERSION = 1


def load_finished_blocks(
    path: str | os.PathLike[str], plan: Mapping[str, Any] | None = None
) -> set[int]:
    """The finished block indices recorded in ``path``; none when it is missing or, given ``plan``,
    was written for another plan."""
    path = Path(path)
    if not path.exists():
        return set()
    record = json.loads(path.read_text())
    if record.get("format") != FORMAT or record.get("version") != VERSION:
        raise ValueError(f"{path} is not a version-{VERSION} block progress file")
    if plan is not None and record.get("plan") != _jsonable(plan):
        return set()
    return {i for start, stop in record["finished"] for i in range(start, stop)}


class BlockProgress:
    """Records finished blocks in ``path``, starting from what it already holds for ``plan``."""

    def __init__(self, path: str | os.PathLike[str], plan: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.plan = _jsonable(plan)
        self.finished = load_finished_blocks(self.path, self.plan)

    def mark_done(self, index: int) -> None:
        """Record block ``index`` as finished; call it once the block's data is written."""
        self.finished.add(int(index))
        record = {
            "format": FORMAT,
            "version": VERSION,
            "plan": self.plan,
            "finished": _ranges(self.finished),
        }
        with atomic_file(self.path) as partial:
            partial.write_text(json.dumps(record))


def _ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted indices as half-open ``[start, stop)`` runs."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return runs


def _jsonable(plan: Mapping[str, Any]) -> Any:
    # Compare plans as they read back from JSON (tuples become lists).
    return json.loads(json.dumps(plan))
