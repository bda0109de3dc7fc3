"""The training DataLoader: an endless, deterministic stream of dataset indices.

Batch ``b`` of rank ``r`` (of ``world_size``) holds the indices
``start_index + (b * world_size + r) * batch_size + [0, batch_size)``. Since each item is a pure
function of the seed and its index, resuming at ``start_index`` reproduces the stream exactly,
and ranks never draw the same patch.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def batch_indices(
    *, start: int, batch_size: int, rank: int, world_size: int, batch: int
) -> list[int]:
    """The indices of batch number ``batch`` of rank ``rank``."""
    first = start + (batch * world_size + rank) * batch_size
    return list(range(first, first + batch_size))


def sample_indices(
    *, start: int, batch_size: int, rank: int, world_size: int, batches: int
) -> list[int]:
    """The indices of the first ``batches`` batches of rank ``rank``, in order."""
    stream = IndexStream(batch_size=batch_size, start_index=start, rank=rank, world_size=world_size)
    return [i for batch in itertools.islice(stream, batches) for i in batch]


class IndexStream(Sampler[list[int]]):
    """Endless batches of indices for one rank (see the module docstring)."""

    def __init__(
        self, *, batch_size: int, start_index: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.batch_size = batch_size
        self.start_index = start_index
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in itertools.count():
            yield batch_indices(
                start=self.start_index,
                batch_size=self.batch_size,
                rank=self.rank,
                world_size=self.world_size,
                batch=batch,
            )


class _SeedWorker:
    """Seeds torch, numpy and random in each worker from (seed, worker id).

    Samples do not depend on these (they use their own per-index generator), but third-party
    transforms might.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, worker_id: int) -> None:
        value = int(np.random.SeedSequence([self.seed, worker_id]).generate_state(1)[0])
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)


def usable_workers(requested: int) -> tuple[int, str | None]:
    """``data.num_workers``, at most the CPU cores this process may use (shared among the
    training processes torchrun starts on the machine), and a notice when it was capped.

    Workers beyond the cores only compete for them, each holding its own copy of the
    dataset's buffers; 24 workers on 2 cores made training slower, not faster.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    share = max(1, cores // processes)
    if requested <= share:
        return requested, None
    among = f" shared by {processes} training processes" if processes > 1 else ""
    return share, (
        f"data.num_workers = {requested}, but this machine has {cores} CPU core(s){among}: "
        f"starting {share} worker(s)"
    )


def make_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    start_index: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    seed: int = 0,
) -> DataLoader[Any]:
    """A DataLoader over ``dataset`` yielding batches of this rank's indices, forever.

    ``batch_size`` is per rank; ``start_index`` is the global index to start from (the number of
    patches all ranks consumed so far). A dataset with ``preload()`` is loaded first, so worker
    processes share its cached arrays instead of each decoding every image.
    """
    preload = getattr(dataset, "preload", None)
    if callable(preload):
        preload()
    return DataLoader(
        dataset,
        batch_sampler=IndexStream(
            batch_size=batch_size, start_index=start_index, rank=rank, world_size=world_size
        ),
        num_workers=num_workers,
        worker_init_fn=_SeedWorker(seed) if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )
