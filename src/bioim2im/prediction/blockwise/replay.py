"""Any blocks of a plan, with the values one pass over all of them gives, bit for bit.

One pass (:meth:`~bioim2im.prediction.blockwise.blocks.BlockPlan.blocks` over every block) runs
each window once, in full batches across block borders, and adds the windows' outputs in an
order fixed by the plan: a block's own windows first, then the sums its earlier neighbours hand
on to it, face by face. Floating-point addition is not associative and a network's output for
a window may change in its last bits with the other windows of its batch, so a block predicted
on its own (every window touching its core, in batches of its own) differs from the pass in
the last bits.

:func:`replay` predicts a chosen set of blocks (a task of a cluster, the blocks an interrupted
run did not finish) so that each gets exactly the values of the full pass, whichever process
predicts it, whichever others are predicted with it and however often it is predicted again:

- the earlier blocks of the pass that hand sums on to a chosen block (its *feeders*) run again,
  but only their windows that reach a chosen block, and hand on only to chosen blocks;
- every window runs in the batch it has in the full pass, with the same companions (the other
  windows of such a batch run too, their outputs unused). The batches of the full pass follow
  from the number of windows each block runs (:class:`FullPass`).

The price is those extra windows: the windows of the feeders that reach the chosen blocks
(which a block predicted on its own runs too), and the companions, fewer than one batch per
run of needed windows. A set of consecutive blocks of the sweep order pays them once at its
borders.

It holds for the same network in the same memory layout: ``channels_last = "auto"`` chooses
the layout by timing, per process, and the two layouts round differently.
"""

from __future__ import annotations

import bisect
import collections
import functools
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch

from bioim2im.prediction.blockwise.blocks import Block, BlockPlan, OpenBlock


class Runner(Protocol):
    """What a replay uses of the window runner
    (:class:`~bioim2im.prediction.blockwise.runner._WindowRunner`, which imports this module)."""

    device: torch.device

    def _weighted(
        self, head: str, output: torch.Tensor, windows: Sequence[tuple[Block, tuple[int, ...]]]
    ) -> torch.Tensor: ...

    def _zeros(self, block: Block) -> dict[str, torch.Tensor]: ...
    def _finish(self, current: OpenBlock) -> tuple[Block, dict[str, np.ndarray]]: ...
    def _hand_on_all(self, current: OpenBlock) -> None: ...
    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]: ...
    def _crop(self, image: torch.Tensor, start: tuple[int, ...]) -> torch.Tensor: ...
    def _placement(
        self, head: str, block: Block, start: tuple[int, ...]
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]]: ...


WindowStart = tuple[int, ...]


class _FullRank:
    """Each block's position in the sweep order of the full pass, computed (no table)."""

    def __init__(self, plan: BlockPlan) -> None:
        self.grid = plan.grid
        self.sweep = plan.sweep or tuple(range(len(self.grid)))
        self.swept = tuple(self.grid[a] for a in self.sweep)
        self.size = len(plan)

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.size:
            raise KeyError(index)
        position = np.unravel_index(index, self.grid)
        return int(np.ravel_multi_index(tuple(position[a] for a in self.sweep), self.swept))

    def get(self, index: int, default: int) -> int:
        return self[index] if 0 <= index < self.size else default


@dataclass(frozen=True)
class FullPass:
    """The windows of the full pass of a plan and how its run batches them."""

    plan: BlockPlan
    batch_size: int
    owned: tuple[tuple[tuple[int, ...], ...], ...]
    """Per axis and block position along it: the window starts run by the blocks there."""
    order: np.ndarray
    """Block indices in sweep order."""
    offsets: np.ndarray
    """Where each block's windows begin in the pass's sequence of windows, by sweep rank (one
    more entry: the total)."""
    segments: tuple[int, ...]
    """Offsets from which batches are full ones again (after a partial batch), and the total."""

    @property
    def rank(self) -> _FullRank:
        return _FullRank(self.plan)

    def windows(self, index: int) -> list[WindowStart]:
        """The starts (padded image) of the windows block ``index`` runs, in the pass's order."""
        position = np.unravel_index(index, self.plan.grid)
        return list(self.plan.in_sweep_order([self.owned[a][p] for a, p in enumerate(position)]))

    def batch(self, offset: int) -> tuple[int, int]:
        """The batch ``[start, stop)`` of the pass's windows that holds window ``offset``."""
        i = bisect.bisect_right(self.segments, offset) - 1
        start = self.segments[i] + (offset - self.segments[i]) // self.batch_size * self.batch_size
        return start, min(start + self.batch_size, self.segments[i + 1])

    def locate(self, offset: int) -> tuple[int, int]:
        """(block index, its window number) of the pass's window ``offset``."""
        rank = int(np.searchsorted(self.offsets, offset, side="right")) - 1
        return int(self.order[rank]), offset - int(self.offsets[rank])


@functools.lru_cache(maxsize=8)
def full_pass(plan: BlockPlan, batch_size: int) -> FullPass:
    """The windows and batches of one pass over every block of ``plan``."""
    owned = []
    for axis, starts in enumerate(plan.starts):
        by_block: list[list[int]] = [[] for _ in range(plan.grid[axis])]
        for start in starts:
            lo, _ = plan._extent(axis, start)
            by_block[lo // plan.block_size[axis]].append(start)
        owned.append(tuple(tuple(s) for s in by_block))
    counts = np.ones(plan.grid, np.int64)
    for axis, lists in enumerate(owned):
        shape = [1] * len(plan.grid)
        shape[axis] = len(lists)
        counts = counts * np.array([len(s) for s in lists], np.int64).reshape(shape)
    sweep = plan.sweep or tuple(range(len(plan.grid)))
    in_order = counts.transpose(sweep).ravel()
    offsets = np.concatenate([[0], np.cumsum(in_order)])
    order = np.arange(len(plan)).reshape(plan.grid).transpose(sweep).ravel()
    return FullPass(plan, batch_size, tuple(owned), order, offsets, _segments(in_order, batch_size))


def _segments(counts: np.ndarray, batch_size: int) -> tuple[int, ...]:
    """Where the batches of the pass start anew, following the runner's loop
    (:meth:`~bioim2im.prediction.blockwise.runner._WindowRunner.run`): it opens blocks while
    fewer than a batch of windows is queued and at most ``batch_size`` blocks are open, then
    runs a batch of what is queued, at most ``batch_size`` windows."""
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    segments = [0]
    consumed = queued = opened = front = 0
    n = len(counts)
    while True:
        while opened < n and queued - consumed < batch_size and opened - front <= batch_size:
            queued += int(counts[opened])
            opened += 1
        waiting = queued - consumed
        if waiting >= batch_size:
            consumed += waiting // batch_size * batch_size  # full batches, no refill between
        elif waiting > 0:
            consumed += waiting  # a partial batch: the next ones start after it
            segments.append(consumed)
        elif opened == n:
            break
        while front < opened and ends[front] <= consumed:
            front += 1
    if segments[-1] != total:
        segments.append(total)
    return tuple(segments)


@dataclass
class _Part:
    """A block taking part in a replay: its role, the block (windows it runs) and, per window,
    whether its output counts."""

    role: str
    """``write`` (a chosen block), ``feed`` (hands sums on to chosen blocks) or ``fill`` (its
    windows only complete batches)."""
    block: Block
    needed: list[bool]


def plan_replay(
    plan: BlockPlan, batch_size: int, chosen: Iterable[int]
) -> tuple[list[_Part], list[list[tuple[int, int]]]]:
    """The blocks taking part in predicting ``chosen`` as the full pass does, in sweep order,
    and the batches to run: lists of (block index, window number in its part)."""
    passed = full_pass(plan, batch_size)
    rank = passed.rank
    chosen = set(chosen)
    for index in chosen:
        if not 0 <= index < len(plan):
            raise IndexError(f"block {index} is not among the {len(plan)} blocks")
    feeders = _feeders(plan, rank, chosen)
    needed: set[int] = set()  # offsets in the pass's windows
    for index in chosen:
        start = int(passed.offsets[rank[index]])
        needed.update(range(start, start + len(passed.windows(index))))
    for index, (full, targets) in feeders.items():
        regions = [region for target, _, region in full.hands_on if target in targets]
        start = int(passed.offsets[rank[index]])
        for number, window in enumerate(passed.windows(index)):
            if any(_meets(plan, window, region) for region in regions):
                needed.add(start + number)
    batches = sorted({passed.batch(offset) for offset in needed})
    runs: dict[int, list[int]] = collections.defaultdict(list)  # block -> its window numbers
    located = []
    for start, stop in batches:
        batch = [passed.locate(offset) for offset in range(start, stop)]
        for index, number in batch:
            runs[index].append(number)
        located.append(batch)
    taking_part = sorted(set(runs) | chosen | set(feeders), key=lambda i: rank[i])
    parts, renumber = [], {}
    for index in taking_part:
        numbers = runs.get(index, [])
        renumber[index] = {number: i for i, number in enumerate(numbers)}
        windows = [passed.windows(index)[n] for n in numbers] if numbers else []
        offset = int(passed.offsets[rank[index]])
        wanted = [offset + n in needed for n in numbers]
        if index in chosen:
            full = plan._block(index, rank)  # type: ignore[arg-type]
            hands = tuple(h for h in full.hands_on if h[0] in chosen)
            parts.append(_Part("write", replace(full, hands_on=hands), wanted))
        elif index in feeders:
            full, targets = feeders[index]
            hands = tuple(h for h in full.hands_on if h[0] in targets)
            block = plan._with_windows(index, full.core, windows, {index: 0})
            reach = functools.reduce(_box, (region for _, _, region in hands))
            parts.append(_Part("feed", replace(block, reach=reach, hands_on=hands), wanted))
        else:
            block = plan._with_windows(index, plan.core(index), windows, {index: 0})
            parts.append(_Part("fill", block, wanted))
    schedule = [[(index, renumber[index][number]) for index, number in batch] for batch in located]
    return parts, schedule


def _feeders(
    plan: BlockPlan, rank: _FullRank, chosen: set[int]
) -> dict[int, tuple[Block, set[int]]]:
    """The blocks outside ``chosen`` that hand sums on to chosen ones in the full pass: each
    with its block of the pass and those targets."""
    reach = [math.ceil(r / b) for r, b in zip(plan.roi_size, plan.block_size, strict=True)]
    candidates: set[int] = set()
    for index in chosen:
        position = [int(p) for p in np.unravel_index(index, plan.grid)]
        mine = rank[index]
        around = [
            range(max(p - k, 0), min(p + k, n - 1) + 1)
            for p, k, n in zip(position, reach, plan.grid, strict=True)
        ]
        for other in itertools.product(*around):
            neighbour = int(np.ravel_multi_index(other, plan.grid))
            if neighbour not in chosen and rank[neighbour] < mine:
                candidates.add(neighbour)
    found = {}
    for index in candidates:
        full = plan._block(index, rank)  # type: ignore[arg-type]
        targets = {target for target, _, _ in full.hands_on if target in chosen}
        if targets:
            found[index] = (full, targets)
    return found


def _meets(plan: BlockPlan, window: WindowStart, region: Sequence[slice]) -> bool:
    """Whether the window starting at ``window`` (padded image) covers part of ``region``."""
    for axis, extent in enumerate(region):
        lo, hi = plan._extent(axis, window[axis])
        if hi <= extent.start or lo >= extent.stop:
            return False
    return True


def _box(a: Sequence[slice], b: Sequence[slice]) -> tuple[slice, ...]:
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )


def replay(
    runner: Runner,
    parts: list[_Part],
    schedule: list[list[tuple[int, int]]],
    items: Iterator[tuple[Block, np.ndarray]],
) -> Iterator[tuple[Block, dict[str, np.ndarray]]]:
    """Run ``schedule`` with a window runner (:class:`~bioim2im.prediction.blockwise.runner.
    _WindowRunner`) on ``items`` (each part's block and its data, in order); yield the chosen
    blocks with their outputs over their cores, in sweep order."""
    by_index = {part.block.index: part for part in parts}
    opened: collections.OrderedDict[int, OpenBlock] = collections.OrderedDict()
    source = iter(items)

    def open_until(index: int) -> None:
        while index not in opened:
            item = next(source, None)
            if item is None:
                raise RuntimeError(f"block {index} of the replay was never read")
            block, data = item
            part = by_index[block.index]
            sums = runner._zeros(block) if part.role != "fill" else {}
            image = torch.from_numpy(data).to(runner.device)
            opened[block.index] = OpenBlock(block, image, sums, block.n_windows)

    def finish_front() -> Iterator[tuple[Block, dict[str, np.ndarray]]]:
        while opened:
            index, current = next(iter(opened.items()))
            if current.left:
                return
            del opened[index]
            part = by_index[index]
            if part.role == "write":
                yield runner._finish(current)
            elif part.role == "feed":
                runner._hand_on_all(current)

    with torch.inference_mode():
        for batch in schedule:
            open_until(batch[-1][0])
            windows = []
            for index, number in batch:
                current = opened[index]
                windows.append((current, current.block.windows[number], by_index[index], number))
            outputs = runner._forward(
                torch.stack([runner._crop(c.image, start) for c, start, _, _ in windows])
            )
            for head, output in outputs.items():
                weighted = runner._weighted(head, output, [(c.block, w) for c, w, _, _ in windows])
                for i, (current, start, part, number) in enumerate(windows):
                    if part.role == "fill" or not part.needed[number]:
                        continue
                    src, dst = runner._placement(head, current.block, start)
                    window: tuple[int | slice, ...] = (i, *src)
                    current.sums[head][dst] += weighted[window]
            for current, _, _, _ in windows:
                current.left -= 1
            yield from finish_front()
        # Blocks after the last batch run no window (what they hold was handed on to them).
        for block, data in source:
            part = by_index[block.index]
            sums = runner._zeros(block) if part.role != "fill" else {}
            image = torch.from_numpy(data).to(runner.device)
            opened[block.index] = OpenBlock(block, image, sums, block.n_windows)
        yield from finish_front()


def replay_blocks(
    plan: BlockPlan,
    batch_size: int,
    chosen: Iterable[int],
) -> tuple[list[Block], Callable[..., Iterator[tuple[Block, dict[str, np.ndarray]]]]]:
    """The blocks to read for a replay of ``chosen`` (in order) and the function that
    predicts them, given a window runner and the blocks with their data."""
    parts, schedule = plan_replay(plan, batch_size, chosen)

    def run(
        runner: Runner, items: Iterator[tuple[Block, np.ndarray]]
    ) -> Iterator[tuple[Block, dict[str, np.ndarray]]]:
        return replay(runner, parts, schedule, items)

    return [part.block for part in parts], run
