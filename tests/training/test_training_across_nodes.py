"""`bioim2im train --nnodes 2 --rdzv-endpoint HOST:PORT`: two "nodes" (two launchers, one
process each, on this machine) meet through torchrun's c10d rendezvous and train one model
(gloo on the CPU): one writer, every step, and each node's command gets the run's result."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bioim2im.model.checkpoint import load_checkpoint

pytestmark = pytest.mark.distributed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_meet_through_the_rendezvous_and_train_one_model(tiny_preset, tmp_path: Path):
    run = tmp_path / "two-nodes"
    endpoint = f"127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "bioim2im", "train", str(tiny_preset()),
        "--nnodes", "2", "--rdzv-endpoint", endpoint, "--rdzv-id", "test-two-nodes",
        "--run-dir", str(run),
        "--set", "train.steps=4", "--set", "train.val_every=4", "--set", "train.log_every=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # one writer
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    result = json.loads((run / "result.json").read_text())
    assert result["step"] == 4
    for _, err in outputs:  # each node's command reports the run's result
        assert "trained" in err and "4/4" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nnodes", "2"], "needs --rdzv-endpoint HOST:PORT"),
        (["--nnodes", "2", "--rdzv-endpoint", "node1"], "give HOST:PORT"),
        (["--nnodes", "2", "--rdzv-endpoint", "node1:99999"], "give HOST:PORT"),
        (["--nnodes", "0", "--rdzv-endpoint", "node1:29400"], "--nnodes 0: give 1 or more"),
        (["--rdzv-endpoint", "node1:29400"], "go with --nnodes N"),
        (["--nnodes", "2", "--rdzv-endpoint", "n:1", "--rdzv-id", "a b"], "--rdzv-id 'a b'"),
    ],
)
def test_bad_node_options_are_refused_with_one_message(cli, tiny_preset, tmp_path, args, message):
    run = tmp_path / "run"
    result = cli("train", tiny_preset(), "--run-dir", run, *args)
    assert result.code == 2, result.err
    assert message in result.err and "Traceback" not in result.err
    assert not run.exists()


def test_nodes_need_a_run_dir(cli, tiny_preset, tmp_path):
    result = cli("train", tiny_preset(), "--nnodes", "2", "--rdzv-endpoint", "n:1")
    assert result.code == 2 and "give --run-dir" in result.err
