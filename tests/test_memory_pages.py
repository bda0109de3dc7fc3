"""The bioim2im program backs tensors' memory with transparent huge pages where the kernel
gives them only on request: it starts again with glibc's tunable, as the same process, and
the page faults of allocating a large tensor again and again fall by orders of magnitude."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from bioim2im import memory_pages
from bioim2im.memory_pages import OPT_OUT, TUNABLE, huge_page_environment

GLIBC = memory_pages._glibc()


def _environment(**changes: str | None) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    for name, value in changes.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return environ


@pytest.fixture
def glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_pages, "_glibc", lambda: (2, 36))


def test_the_tunable_is_added_only_where_the_kernel_waits_to_be_asked(
    glibc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert huge_page_environment({}, "madvise") == {"GLIBC_TUNABLES": f"{TUNABLE}=1"}
    assert huge_page_environment({}, "always") == {}  # every process has them already
    assert huge_page_environment({}, "never") == {}
    monkeypatch.setattr(memory_pages, "_thp_mode", lambda: None)  # no such kernel setting
    assert huge_page_environment({}) == {}


def test_the_users_own_tunables_are_kept_and_theirs_wins(glibc: None) -> None:
    mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert huge_page_environment(mine, "madvise") == {
        "GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{TUNABLE}=1"
    }
    assert huge_page_environment({"GLIBC_TUNABLES": f"{TUNABLE}=0"}, "madvise") == {}


def test_bioim2im_malloc_system_leaves_the_allocator_alone(glibc: None) -> None:
    assert huge_page_environment({OPT_OUT: "system"}, "madvise") == {}
    assert huge_page_environment({OPT_OUT: " System "}, "madvise") == {}


def test_old_or_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_pages, "_glibc", lambda: (2, 31))  # no such tunable before 2.35
    assert huge_page_environment({}, "madvise") == {}
    monkeypatch.setattr(memory_pages, "_glibc", lambda: None)  # musl, macOS, Windows
    assert huge_page_environment({}, "madvise") == {}


def test_the_kernel_mode_is_the_bracketed_word(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "enabled"  # type: ignore[operator]
    path.write_text("always [madvise] never\n")
    assert memory_pages._thp_mode(path) == "madvise"
    assert memory_pages._thp_mode(path.with_name("missing")) is None


RESTART = textwrap.dedent(
    """
    import os, sys
    print("started", os.getpid(), file=sys.stderr, flush=True)
    from bioim2im.memory_pages import restart_with_huge_pages
    restart_with_huge_pages()
    print(os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:])
    """
)


def test_the_program_starts_again_as_the_same_process_with_the_tunable() -> None:
    wanted = huge_page_environment(_environment())
    done = subprocess.run(
        [sys.executable, "-c", RESTART, "--input", "a b.tif"],
        env=_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    starts = done.stderr.split()
    if wanted:
        # Started twice, as one process (the same pid), with the same arguments.
        assert starts[0::2] == ["started", "started"] and starts[1] == starts[3]
        assert done.stdout.strip() == f"{wanted['GLIBC_TUNABLES']} ['--input', 'a b.tif']"
    else:
        assert starts[0::2] == ["started"]
        assert done.stdout.strip() == "['--input', 'a b.tif']"


def test_the_program_does_not_start_again_when_told_not_to_or_set_already() -> None:
    for changes in ({OPT_OUT: "system"}, {"GLIBC_TUNABLES": f"{TUNABLE}=1"}):
        done = subprocess.run(
            [sys.executable, "-c", RESTART],
            env=_environment(**changes),
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stderr.count("started") == 1, changes


FAULTS = textwrap.dedent(
    """
    import resource, torch
    from bioim2im.memory_pages import restart_with_huge_pages
    restart_with_huge_pages()
    torch.empty(64 << 18).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):  # what a network's activations do on every batch
        torch.empty(64 << 18).fill_(1.0)  # 64 MiB, freed at once
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.skipif(
    not huge_page_environment(_environment()),
    reason="this kernel gives huge pages to every process or none (nothing to ask for)",
)
def test_allocating_large_tensors_again_and_again_faults_far_fewer_pages() -> None:
    def faults(**changes: str | None) -> int:
        done = subprocess.run(
            [sys.executable, "-c", FAULTS],
            env=_environment(OMP_NUM_THREADS="1", **changes),
            capture_output=True,
            text=True,
            check=True,
        )
        return int(done.stdout)

    plain, huge = faults(**{OPT_OUT: "system"}), faults()
    # 20 x 64 MiB in 4 KiB pages is 327,680 faults; in 2 MiB pages, 640.
    assert plain > 200_000
    assert huge * 20 < plain, (plain, huge)


TRIMMED = textwrap.dedent(
    """
    import resource, torch
    from bioim2im.memory_pages import keep_freed_memory

    def faults():
        for _ in range(10):  # glibc settles on the heap's size
            torch.empty(4 << 20).fill_(1.0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            torch.empty(4 << 20).fill_(1.0)  # 16 MiB, freed at once
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    eager = faults()
    keep_freed_memory()
    print(eager, faults())
    """
)


def test_a_dask_worker_keeps_freed_memory_for_the_next_batch() -> None:
    """Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc
    hand every allocation over 128 KiB back to the kernel: each 16 MiB tensor was faulted in
    page by page again. A worker loading a model calls keep_freed_memory, which undoes it."""
    done = subprocess.run(
        [sys.executable, "-c", TRIMMED],
        env=_environment(OMP_NUM_THREADS="1", MALLOC_TRIM_THRESHOLD_="65536"),
        capture_output=True,
        text=True,
        check=True,
    )
    trimmed, kept = map(int, done.stdout.split())
    assert trimmed > 20 * 4096 * 0.9  # every page of every tensor, again
    assert kept * 20 < trimmed, (trimmed, kept)


def test_python_m_bioim2im_runs_its_command_once_whether_it_starts_again_or_not() -> None:
    from bioim2im import __version__

    for changes in ({}, {OPT_OUT: "system"}):
        done = subprocess.run(
            [sys.executable, "-m", "bioim2im", "--version"],
            env=_environment(**changes),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0 and done.stdout == f"bioim2im {__version__}\n", changes
