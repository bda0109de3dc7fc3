"""Process-group set-up for DDP under torchrun (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bioim2im.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def restarted_by_torchrun() -> bool:
    """True when torchrun restarted this worker group after a failure (--max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


@contextlib.contextmanager
def distributed(device: str = "auto") -> Iterator[DistEnv]:
    """Initialise the process group when torchrun launched us; tear it down on the way out."""
    if not launched_by_torchrun():
        yield DistEnv(0, 0, 1, _device(device, 0))
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    env = DistEnv(rank, local_rank, world, _device(device, local_rank))
    if env.device.type == "cuda":
        torch.cuda.set_device(env.device)
    backend = "nccl" if env.device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    try:
        yield env
    finally:
        dist.destroy_process_group()


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        return (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
    return torch.device(choice)


def broadcast_object(value: object, env: DistEnv) -> object:
    """Rank 0's value on every rank."""
    if not env.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def set_options(overrides: Sequence[str]) -> list[str]:
    """``--set`` options repeating ``overrides`` on a relaunched command line."""
    return [part for text in overrides for part in ("--set", text)]


@dataclass(frozen=True)
class Nodes:
    """Several machines training together: torchrun's c10d rendezvous at ``endpoint``
    (``HOST:PORT``, on one of them), where ``count`` nodes meet under the job ``run_id``."""

    count: int
    endpoint: str
    run_id: str

    @classmethod
    def parse(cls, count: int, endpoint: str | None, run_id: str) -> Nodes:
        """Checked: a UserError naming the option that is wrong."""
        if count < 1:
            raise UserError(f"--nnodes {count}: give 1 or more")
        if endpoint is None:
            raise UserError(
                "--nnodes N needs --rdzv-endpoint HOST:PORT: where the nodes meet (a port on "
                "one of them, e.g. the first node of the job)"
            )
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise UserError(f"--rdzv-endpoint {endpoint!r}: give HOST:PORT, e.g. node001:29400")
        if not run_id or not all(c.isalnum() or c in "-_." for c in run_id):
            raise UserError(f"--rdzv-id {run_id!r}: letters, digits, '-', '_' and '.' only")
        return cls(count, endpoint, run_id)

    def torchrun_options(self) -> list[str]:
        return [
            f"--nnodes={self.count}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={self.endpoint}",
            f"--rdzv-id={self.run_id}",
        ]


def relaunch(devices: int, command: Sequence[str], what: str, nodes: Nodes | None = None) -> None:
    """Run the bioim2im ``command`` (e.g. ``["train", "preset.toml"]``) as ``devices`` processes
    under torchrun on this machine, alone or as one of ``nodes``; a UserError when they fail
    (they reported why)."""
    import subprocess
    import sys

    where = ["--standalone"] if nodes is None else nodes.torchrun_options()
    launcher = [
        sys.executable, "-m", "torch.distributed.run", *where,
        f"--nproc-per-node={devices}", "-m", "bioim2im",
    ]  # fmt: skip
    completed = subprocess.run([*launcher, *command], check=False)
    if completed.returncode != 0:
        on = "" if nodes is None else f" on each of {nodes.count} nodes"
        raise UserError(
            f"{what} under torchrun with {devices} processes{on} failed "
            f"(exit {completed.returncode}); see the messages above"
        )
