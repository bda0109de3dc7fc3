"""`bioim2im predict --cluster`: the block plan as tasks of a Dask cluster (2 worker processes
here) writes what a single process writes, bit for bit, even when a worker or the client is
killed mid-run or the scheduler goes away; the SLURM job script follows the cluster settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from predict_helpers import INSTANCE, head_path, nuclei_image, read_zarr

from bioim2im.errors import EnvironmentFailure
from bioim2im.prediction import cluster as on_cluster
from bioim2im.prediction.blockwise import load_finished_blocks
from bioim2im.prediction.job import predict_files

distributed = pytest.importorskip("distributed")

# The layout "auto" picks by timing, per process (and the two round differently): fix it.
FIXED = ["predict.channels_last=false"]
OVERRIDES_2D = [*INSTANCE, *FIXED, "predict.block_size=[32, 32]"]
OVERRIDES_3D = [*FIXED, "predict.block_size=[8, 16, 16]"]
SMALL_TASKS = ["cluster.blocks_per_task=3"]


def start_cluster(workers: int = 2) -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        resources={on_cluster.SLOT: 1},
        dashboard_address=":0",
        silence_logs=50,
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    with start_cluster() as local:
        yield local


@pytest.fixture
def client(cluster) -> Iterator[distributed.Client]:
    with distributed.Client(cluster) as connected:
        yield connected


def same_outputs(out: Path, single: Path, stem: str, heads: tuple[str, ...]) -> None:
    for head in heads:
        got = read_zarr(head_path(out / f"{stem}.ome.zarr", head) / "0")
        expected = read_zarr(head_path(single / f"{stem}.ome.zarr", head) / "0")
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes(), f"{stem} {head} differs"
    assert (out / "predictions.csv").read_text() == (single / "predictions.csv").read_text()


def recorded(out: Path, stem: str) -> set[int]:
    found: set[int] = set()
    for path in (out / f".{stem}.ome.zarr.partial" / "progress").glob("t00000-*.json"):
        try:
            found |= load_finished_blocks(path)
        except (OSError, ValueError):  # being replaced right now
            continue
    return found


def wait_until(condition, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def idle(client: distributed.Client) -> bool:
    """No task left on the scheduler, none running on a worker (a task the scheduler forgot
    when its client died runs to its end)."""
    tasks = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    running = client.run(lambda dask_worker: dask_worker.state.executing_count)
    return tasks == 0 and not any(running.values())


def test_a_3d_volume_and_a_2d_image_equal_one_process_bit_for_bit(
    run_2d, run_3d, cluster, client, tmp_path
):
    image = nuclei_image(tmp_path / "cells.tif", (96, 160), seed=5)
    volume = nuclei_image(tmp_path / "vol.tif", (16, 48, 64), seed=6)
    before = client.run(lambda: on_cluster._model_loads)
    for run, path, overrides, heads in (
        (run_2d, image, OVERRIDES_2D, ("seg", "prob")),
        (run_3d, volume, OVERRIDES_3D, ("seg",)),
    ):
        single = tmp_path / f"single-{path.stem}"
        out = tmp_path / f"cluster-{path.stem}"
        predict_files(run, path, single, overrides=overrides, progress=False)
        summary = predict_files(
            run,
            path,
            out,
            overrides=[*overrides, *SMALL_TASKS],
            cluster=cluster.scheduler_address,
            progress=False,
        )
        same_outputs(out, single, path.stem, heads)
        blocks = summary.results[0].blocks
        assert blocks.total == blocks.predicted > 3 and blocks.resumed == 0
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [f"{path.stem}.ome.zarr", "predictions.csv"]
        )
    # Each worker loaded each model at most once, however many tasks it ran.
    loads = client.run(lambda: on_cluster._model_loads)
    assert all(loads[w] - before[w] <= 2 for w in loads) and sum(loads.values()) > sum(
        before.values()
    )


def test_a_worker_killed_mid_run_changes_nothing(run_2d, cluster, client, tmp_path):
    image = nuclei_image(tmp_path / "big.tif", (256, 256), seed=4)
    single = tmp_path / "single"
    predict_files(run_2d, image, single, overrides=OVERRIDES_2D, progress=False)
    out = tmp_path / "out"
    pids = client.run(os.getpid)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["summary"] = predict_files(
                run_2d,
                image,
                out,
                overrides=[*OVERRIDES_2D, "cluster.blocks_per_task=8"],
                cluster=cluster.scheduler_address,
                progress=False,
            )
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_until(lambda: recorded(out, "big") or not thread.is_alive())
        victim = next(iter(pids.values()))
        os.kill(victim, signal.SIGKILL)
        killed_after = len(recorded(out, "big"))
    finally:
        thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    assert 1 <= killed_after < 64, "the worker was not killed mid-run"
    same_outputs(out, single, "big", ("seg", "prob"))
    wait_until(lambda: len(cluster.scheduler.workers) == 2)  # the nanny restarted it


def cli_command(run: Path, image: Path, out: Path, where: str) -> list[str]:
    command = [sys.executable, "-m", "bioim2im", "predict", str(run), "-i", str(image)]
    overrides = [*OVERRIDES_2D, "cluster.blocks_per_task=2"]
    return [*command, "-o", str(out), "--cluster", where] + [
        a for text in overrides for a in ("--set", text)
    ]


def test_a_run_submitted_again_after_the_client_was_killed_finishes_only_the_missing_blocks(
    run_2d, cluster, client, tmp_path
):
    image = nuclei_image(tmp_path / "big.tif", (256, 256), seed=4)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        cli_command(run_2d, image, out, cluster.scheduler_address),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_until(lambda: len(recorded(out, "big")) >= 2 or first.poll() is not None)
    finally:
        first.kill()
        first.wait()
    # The scheduler forgets the dead client's tasks; those running finish their blocks.
    wait_until(lambda: idle(client))
    done = recorded(out, "big")
    assert 2 <= len(done) < 64, "the client was not killed mid-run"
    assert not (out / "big.ome.zarr").exists()

    summary = predict_files(
        run_2d,
        image,
        out,
        overrides=OVERRIDES_2D,
        cluster=cluster.scheduler_address,
        progress=False,
    )
    blocks = summary.results[0].blocks
    assert (blocks.total, blocks.resumed, blocks.predicted) == (64, len(done), 64 - len(done))
    single = tmp_path / "single"
    predict_files(run_2d, image, single, overrides=OVERRIDES_2D, progress=False)
    same_outputs(out, single, "big", ("seg", "prob"))


def test_the_scheduler_gone_stops_the_run_with_one_message_and_it_resumes(
    run_2d, cluster, tmp_path
):
    image = nuclei_image(tmp_path / "big.tif", (256, 256), seed=4)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    doomed = start_cluster(workers=1)
    try:
        process = subprocess.Popen(
            cli_command(run_2d, image, out, doomed.scheduler_address),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        wait_until(lambda: recorded(out, "big") or process.poll() is not None)
    finally:
        doomed.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    assert "lost the Dask scheduler" in err and "run the same command again" in err
    assert "Traceback" not in err and err.count("error:") == 1
    done = recorded(out, "big")

    summary = predict_files(
        run_2d, image, out, overrides=OVERRIDES_2D, cluster=cluster.scheduler_address
    )
    assert summary.results[0].blocks.resumed >= len(done)
    single = tmp_path / "single"
    predict_files(run_2d, image, single, overrides=OVERRIDES_2D, progress=False)
    same_outputs(out, single, "big", ("seg", "prob"))


class FullDisk(distributed.WorkerPlugin):
    """In each worker: writing the output chunks at Y, X = 32, 32 fails, as on a full disk."""

    def setup(self, worker) -> None:
        from bioim2im.prediction import outputs

        self.original = write = outputs.OmeZarrStore.write

        def failing(store, head, time_point, region, values):
            if (region[-2].start, region[-1].start) == (32, 32):
                raise OSError(28, "No space left on device")
            return write(store, head, time_point, region, values)

        outputs.OmeZarrStore.write = failing

    def teardown(self, worker) -> None:
        from bioim2im.prediction import outputs

        outputs.OmeZarrStore.write = self.original


def test_a_block_that_keeps_failing_is_named_with_its_cause(run_2d, cluster, client, tmp_path):
    image = nuclei_image(tmp_path / "cells.tif", (64, 96), seed=6)
    out = tmp_path / "out"
    client.register_plugin(FullDisk(), name="full-disk")
    try:
        with pytest.raises(EnvironmentFailure) as failed:
            predict_files(
                run_2d,
                image,
                out,
                overrides=[*OVERRIDES_2D, "cluster.retries=1", "cluster.blocks_per_task=1"],
                cluster=cluster.scheduler_address,
                progress=False,
            )
    finally:
        client.unregister_worker_plugin("full-disk")
    message = str(failed.value)
    assert "failed 2 times" in message and f"{image}: block 4 (voxels 32:64, 32:64)" in message
    assert "OSError: [Errno 28] No space left on device" in message
    assert "run the same command again" in message
    assert not (out / "cells.ome.zarr").exists()
    # Space again: the same command finishes, predicting only what was not done.
    summary = predict_files(
        run_2d, image, out, overrides=OVERRIDES_2D, cluster=cluster.scheduler_address
    )
    assert summary.results[0].blocks.predicted < 6
    single = tmp_path / "single"
    predict_files(run_2d, image, single, overrides=OVERRIDES_2D, progress=False)
    same_outputs(out, single, "cells", ("seg", "prob"))


OBJECTS = (
    'model.heads.prob.postprocess=[{name = "sigmoid"}, {name = "threshold", value = 0.4}, '
    '{name = "connected_components"}]'
)


def test_postprocess_on_the_cluster_equals_one_process(run_2d, cluster, tmp_path):
    from bioim2im.prediction.postprocess import postprocess_files

    image = nuclei_image(tmp_path / "cells.tif", (160, 96), seed=7)
    saved = tmp_path / "saved"
    predict_files(run_2d, image, saved, overrides=FIXED, progress=False)
    chain = [OBJECTS, "predict.block_size=[32, 32]"]
    single = tmp_path / "single"
    postprocess_files(run_2d, saved, single, overrides=chain, heads=["prob"])
    out = tmp_path / "out"
    summary = postprocess_files(
        run_2d,
        saved,
        out,
        overrides=[*chain, "cluster.blocks_per_task=4"],
        heads=["prob"],
        cluster=cluster.scheduler_address,
    )
    assert (summary.blocks, summary.resumed_blocks) == (15, 0)
    labels = read_zarr(head_path(out / "cells.ome.zarr", "prob") / "0")
    assert labels.max() > 3
    assert (
        labels.tobytes() == read_zarr(head_path(single / "cells.ome.zarr", "prob") / "0").tobytes()
    )
    assert (out / "predictions.csv").read_text() == (single / "predictions.csv").read_text()


def test_the_slurm_job_script_follows_the_cluster_settings():
    overrides, settings = on_cluster.split_overrides(
        [
            "predict.tta=true",
            "cluster.queue=gpu",
            "cluster.account=lab42",
            "cluster.cores=8",
            "cluster.memory=64GB",
            "cluster.processes=2",
            "cluster.walltime=1-02:00:00",
            'cluster.job_extra_directives=["--gres=gpu:2"]',
            'cluster.job_script_prologue=["module load cuda/12", "source /opt/venv/bin/activate"]',
        ]
    )
    assert overrides == ["predict.tta=true"]
    script = on_cluster.job_script("slurm", settings, "tcp://10.0.0.1:8786")
    lines = script.splitlines()
    assert lines[0].startswith("#!")
    for directive in (
        "#SBATCH -J bioim2im",
        "#SBATCH -p gpu",
        "#SBATCH -A lab42",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=60G",
        "#SBATCH -t 1-02:00:00",
        "#SBATCH --gres=gpu:2",
    ):
        assert directive in lines, (directive, script)
    assert lines.index("module load cuda/12") < lines.index("source /opt/venv/bin/activate")
    # After the user's lines, the workers get glibc's huge-page tunable (bioim2im.memory_pages)
    # unless the environment names it already: run the line in a shell to see.
    (line,) = [n for n in lines if "GLIBC_TUNABLES" in n]
    assert lines.index(line) > lines.index("source /opt/venv/bin/activate")
    for before, after in (
        ("", "glibc.malloc.hugetlb=1"),
        ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
        ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),
    ):
        shell = subprocess.run(
            ["sh", "-c", f'{line}\nprintf %s "$GLIBC_TUNABLES"'],
            env={"PATH": os.environ["PATH"], "GLIBC_TUNABLES": before},
            capture_output=True,
            text=True,
            check=True,
        )
        assert shell.stdout == after, (before, shell.stdout)
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert worker.startswith(sys.executable)
    for part in ("tcp://10.0.0.1:8786", "--nworkers 2", "--nthreads 4", "--resources"):
        assert part in worker, (part, worker)
    assert f"{on_cluster.SLOT}=1" in worker
    # The other batch systems take the same settings.
    assert "#BSUB -q gpu" in on_cluster.job_script("lsf", settings)
    assert "#BSUB -W 26:00" in on_cluster.job_script("lsf", settings)
    assert "#PBS -q gpu" in on_cluster.job_script("pbs", settings)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "local:0"], "give local:N"),
        (["--cluster", "http://host:1"], "tcp://HOST:PORT"),
        (["--cluster", "nowhere"], "scheduler's address"),
        (["--cluster", "slurm", "--set", "cluster.memory=lots"], "cluster.memory"),
        (["--cluster", "slurm", "--set", "cluster.cores=0"], "cluster.cores"),
        (["--cluster", "slurm", "--set", "cluster.gpus=1"], "cluster.gpus"),
        (["--cluster", "slurm", "--set", r'cluster.job_script_prologue=["a\nb"]'], "one line"),
        (["--cluster", "local:2", "--part", "1/2"], "leave out --devices, --part"),
        (["--cluster", "local:2", "--devices", "2"], "leave out --devices, --part"),
    ],
)
def test_bad_cluster_options_are_refused_with_one_message(cli, run_2d, tmp_path, args, message):
    image = nuclei_image(tmp_path / "cells.tif", (64, 64))
    result = cli("predict", run_2d, "-i", image, "-o", tmp_path / "out", *args)
    assert result.code == 2, result.err
    assert message in result.err and "Traceback" not in result.err
    assert result.err.count("error:") == 1
    assert not (tmp_path / "out").exists()


def test_tasks_are_near_cubic_boxes_covering_each_block_left_once():
    import numpy as np

    from bioim2im.prediction.blockwise.blocks import plan_blocks

    plan = plan_blocks((64, 128, 128), (16, 32, 32), block_size=(8, 16, 16))
    order = plan.sweep_order()
    boxes = on_cluster.box_tasks(plan, order, 64)
    assert len(boxes) == 8
    for box in boxes:  # 4 x 4 x 4 blocks: the fewest faces for 64 blocks
        positions = np.array([np.unravel_index(b, plan.grid) for b in box])
        assert (positions.max(axis=0) - positions.min(axis=0) + 1).tolist() == [4, 4, 4]
    left = order[5:]
    boxes = on_cluster.box_tasks(plan, left, 3)
    assert sorted(b for box in boxes for b in box) == sorted(left)
    for box in boxes:
        assert list(box) == [b for b in left if b in box] and 1 <= len(box) <= 3


def test_local_workers_keep_freed_memory_and_back_it_with_huge_pages():
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in its workers, which hands every allocation
    over 128 KiB back to the kernel at once: a network's activations were faulted in anew on
    every batch. The workers bioim2im starts go without it, and with the huge-page tunable
    where this machine's kernel waits to be asked (bioim2im.memory_pages)."""
    from bioim2im.config.schema import ClusterConfig
    from bioim2im.memory_pages import huge_page_environment

    names = ("MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
    with on_cluster.connect("local:1", ClusterConfig(), None) as connection:
        found = connection.client.run(lambda: {n: os.environ.get(n) for n in names})
    (worker,) = found.values()
    # A nanny sets it in its own process too (the module's other clusters did): workers then
    # inherit it, and keep_freed_memory (tests/test_memory_pages.py) undoes its effect.
    assert worker["MALLOC_TRIM_THRESHOLD_"] == os.environ.get("MALLOC_TRIM_THRESHOLD_")
    tunables = huge_page_environment().get("GLIBC_TUNABLES", os.environ.get("GLIBC_TUNABLES"))
    assert worker["GLIBC_TUNABLES"] == tunables


def test_auto_settings_are_settled_once_for_every_worker(run_3d, cluster, client, tmp_path):
    """``predict.channels_last`` and ``predict.compile`` left "auto" are decided on the client:
    each worker measuring for itself could pick another layout (or compile where another does
    not) and round its blocks differently. The workers load the settled model, and the output
    is the one a single process gives with those settings, bit for bit."""
    volume = nuclei_image(tmp_path / "vol.tif", (16, 48, 64), seed=7)
    out = tmp_path / "cluster"
    overrides = ["predict.block_size=[8, 16, 16]"]  # channels_last and compile: "auto"
    predict_files(
        run_3d,
        volume,
        out,
        overrides=[*overrides, *SMALL_TASKS],
        cluster=cluster.scheduler_address,
        progress=False,
    )
    loaded = client.run(lambda: [source.overrides for source in on_cluster._models])
    settled = {
        tuple(o) for sources in loaded.values() for o in sources if o[:1] == tuple(overrides)
    }
    assert len(settled) == 1, loaded  # one model, the same settings on every worker
    (used,) = settled
    assert used[0] == overrides[0] and used[-1] == "predict.compile=false"  # unless asked for
    assert used[1] in ("predict.channels_last=true", "predict.channels_last=false")
    single = tmp_path / "single"
    predict_files(run_3d, volume, single, overrides=list(used), progress=False)
    got = read_zarr(head_path(out / "vol.ome.zarr", "seg") / "0")
    expected = read_zarr(head_path(single / "vol.ome.zarr", "seg") / "0")
    assert got.tobytes() == expected.tobytes()
