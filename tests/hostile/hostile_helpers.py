"""Helpers of the hostile-input tests: run the command line and judge how it ended.

Three ways to run ``bioim2im``:

- :func:`invoke`: in this process (fast; hypothesis examples use it).
- :func:`start` / :func:`run`: in a process of its own, for what must not touch the test
  process: resource limits (a "full disk" is ``RLIMIT_FSIZE``: writes past N bytes fail with
  EFBIG "File too large"), signals and kills. By default the process is a fork of this one, so
  that it does not pay torch's import again (seconds per run on CI's two cores); with
  ``BIOIM2IM_HOSTILE_SPAWN=1`` (the ``fuzz`` nox session) it is a fresh
  ``python -m bioim2im``, as a user starts it.

A user mistake ends with exit status 2 and one ``error:`` message; an environment failure
(disk full, permission denied) with exit status 1 and one ``error:`` message naming the path
and the cause; neither prints a traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.server
import io
import json
import logging
import math
import os
import re
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as daytime
from pathlib import Path
from typing import Any

from tiny_presets import tiny_unet_toml

SPAWN = os.environ.get("BIOIM2IM_HOSTILE_SPAWN", "") not in ("", "0") or not hasattr(os, "fork")
THOROUGH = os.environ.get("BIOIM2IM_FUZZ", "ci") == "thorough"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def examples(ci: int, thorough: int | None = None) -> int:
    """How many hypothesis examples (or kill rounds) a test runs in the current profile."""
    return (thorough or ci * 20) if THOROUGH else ci


# ---- how a command ended ------------------------------------------------------------------
@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.out[-800:]}\n--- stderr ---\n{self.err[-6000:]}"


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().lower().startswith("error:")]


def is_usage_error(result: Result) -> bool:
    """Typer/click's own refusal of the arguments (unknown option, missing value, bad type)."""
    return result.code == 2 and ("Usage:" in result.err or "Try 'bioim2im" in result.err)


def one_message(result: Result) -> bool:
    """Exactly one error message and no traceback."""
    if "Traceback" in result.err or "Traceback" in result.out:
        return False
    return len(error_lines(result.err)) == 1 or is_usage_error(result)


def ended_cleanly(result: Result, codes: Sequence[int] = (0, 2)) -> bool:
    """Exit status in ``codes``, no traceback; a failure says one message."""
    if result.code not in codes or "Traceback" in result.err or "Traceback" in result.out:
        return False
    return result.code == 0 or one_message(result)


def assert_ok(result: Result) -> None:
    assert result.code == 0, str(result)
    assert "Traceback" not in result.err, str(result)


def assert_user_error(result: Result, *mentions: str) -> None:
    """Exit 2, one ``error:`` message, no traceback, and the message names each of ``mentions``
    (case-insensitive)."""
    assert result.code == 2, str(result)
    assert "Traceback" not in result.err, str(result)
    assert len(error_lines(result.err)) == 1, str(result)
    for mention in mentions:
        assert names(result.err, mention), f"{mention!r} not named\n{result}"


def names(message: str, mention: str) -> bool:
    """Whether ``message`` names ``mention`` (case-insensitive). A word that is not a path must
    appear outside the test's temporary paths, whose folders are named after the test."""
    if os.sep not in mention:
        message = re.sub(r"/test_[^/\s'\"]*|pytest-of-[^/\s]*/pytest-\d+", "/TMP", message)
    return mention.lower() in message.lower()


def assert_environment_error(result: Result, path: str | Path, cause: str) -> None:
    """Exit 1, one ``error:`` message naming ``path`` and the OS's ``cause``, no traceback."""
    assert result.code == 1, str(result)
    assert "Traceback" not in result.err, str(result)
    assert len(error_lines(result.err)) == 1, str(result)
    assert cause.lower() in result.err.lower(), f"cause {cause!r} not named\n{result}"
    assert _names_path(result.err, Path(path)), f"path {path} not named\n{result}"


def _names_path(text: str, path: Path) -> bool:
    # The message may give the path as passed, absolute, or relative to the working directory.
    flat = text.replace("\n", "")
    candidates = {str(path), str(path.resolve())}
    if len(path.name) >= 6:  # a short name alone would match too much
        candidates.add(path.name)
    with contextlib.suppress(ValueError):
        candidates.add(str(path.resolve().relative_to(Path.cwd().resolve())))
    return any(c and c in flat for c in candidates)


# ---- in this process ----------------------------------------------------------------------
def invoke(*args: str | Path, cwd: str | Path | None = None) -> Result:
    """``bioim2im ARGS`` in this process; an exception that escapes the CLI is a traceback."""
    from bioim2im.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    saved_columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "200"
    sys.argv = ["bioim2im", *map(str, args)]
    code = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(),
        ):
            # As a user's shell would: warnings are printed, never turned into errors.
            warnings.simplefilter("default")
            try:
                main()
            except SystemExit as exc:
                code = _exit_code(exc)
            except Exception:
                traceback.print_exc(file=err)
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        if saved_columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved_columns
    return Result(code, out.getvalue(), err.getvalue())


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


# ---- in a process of its own ---------------------------------------------------------------
@dataclass
class Limits:
    file_size: int | None = None
    """RLIMIT_FSIZE in bytes; SIGXFSZ is ignored so that a write past it fails with EFBIG."""
    kill_at_file_size: bool = False
    """SIGXFSZ at its default action: the kernel kills the process in the write that crosses
    the file-size limit (set now, or later with ``resource.prlimit``): a kill in the middle of
    writing a file. Forked processes only (a fresh Python ignores SIGXFSZ)."""
    extra_memory: int | None = None
    """RLIMIT_AS: this many bytes above what the process has mapped when it starts."""


@dataclass
class CliProcess:
    """A running ``bioim2im`` command: :meth:`poll`, :meth:`send_signal`, :meth:`wait`."""

    pid: int
    popen: subprocess.Popen[bytes] | None
    fds: dict[int, str]
    chunks: dict[str, list[bytes]] = field(default_factory=lambda: {"out": [], "err": []})
    returncode: int | None = None
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)

    def __post_init__(self) -> None:
        for fd in self.fds:
            os.set_blocking(fd, False)
            self._selector.register(fd, selectors.EVENT_READ)

    def _drain(self, timeout: float = 0.0) -> None:
        if not self.fds:
            return
        for key, _ in self._selector.select(timeout):
            fd = key.fd
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if data:
                self.chunks[self.fds[fd]].append(data)
            else:
                self._selector.unregister(fd)
                os.close(fd)
                del self.fds[fd]

    def poll(self) -> int | None:
        self._drain()
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                if self.popen is not None:
                    self.popen.returncode = self.returncode
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float = 300) -> Result:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self.returncode = -signal.SIGKILL
                raise AssertionError(f"bioim2im did not end within {timeout} s\n{self.result()}")
            self._drain(0.05)
        # The process is gone; read what is left (a process it started may hold the pipes).
        grace = time.monotonic() + 2.0
        while self.fds and time.monotonic() < grace:
            self._drain(0.05)
        for fd in list(self.fds):
            self._selector.unregister(fd)
            os.close(fd)
            del self.fds[fd]
        return self.result()

    def result(self) -> Result:
        text = {k: b"".join(v).decode("utf-8", "replace") for k, v in self.chunks.items()}
        return Result(
            self.returncode if self.returncode is not None else -999, text["out"], text["err"]
        )


def start(
    *args: str | Path,
    cwd: str | Path,
    limits: Limits | None = None,
    env: Mapping[str, str] | None = None,
) -> CliProcess:
    """Start ``bioim2im ARGS`` in a process of its own (see the module's docstring)."""
    limits = limits or Limits()
    argv = [str(a) for a in args]
    extra_env = {"COLUMNS": "200", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    extra_env.update(env or {})
    if SPAWN:
        return _spawn(argv, Path(cwd), limits, extra_env)
    return _fork(argv, Path(cwd), limits, extra_env)


def run(
    *args: str | Path,
    cwd: str | Path,
    limits: Limits | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> Result:
    return start(*args, cwd=cwd, limits=limits, env=env).wait(timeout)


def _apply_limits(limits: Limits, margin: int = 0) -> None:
    """Soft limits (the hard ones stay), so that a test may still change them with prlimit."""
    _soft_limit(resource.RLIMIT_CORE, 0)  # a kill by SIGXFSZ leaves no core file
    if limits.file_size is not None:
        _soft_limit(resource.RLIMIT_FSIZE, limits.file_size)
    # A fresh Python ignores SIGXFSZ at start-up, so only a forked process can be killed by it.
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL if limits.kill_at_file_size else signal.SIG_IGN)
    if limits.extra_memory is not None:
        _soft_limit(resource.RLIMIT_AS, _mapped_bytes() + limits.extra_memory + margin)


def _soft_limit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    resource.setrlimit(which, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))


def _mapped_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _spawn(argv: list[str], cwd: Path, limits: Limits, env: dict[str, str]) -> CliProcess:
    def prepare() -> None:
        # This runs in a fork of the test process, which has torch loaded already; the fresh
        # interpreter maps about as much, give or take: 1 GiB of margin.
        _apply_limits(limits, margin=1 << 30)

    popen = subprocess.Popen(
        [sys.executable, "-m", "bioim2im", *argv],
        cwd=cwd,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=prepare,
    )
    assert popen.stdout is not None and popen.stderr is not None
    fds = {os.dup(popen.stdout.fileno()): "out", os.dup(popen.stderr.fileno()): "err"}
    popen.stdout.close()
    popen.stderr.close()
    return CliProcess(popen.pid, popen, fds)


_WARM_MODULES = (
    # What train / predict / evaluate import on first use: loaded once here, before forking,
    # instead of in every child.
    "bioim2im.api",
    "bioim2im.cli",
    "bioim2im.evaluation",
    "bioim2im.prediction.job",
    "bioim2im.training.trainer",
    "bioim2im.data.datasets",
    "bioim2im.plugin.manager",
    "monai.networks.nets",
    "monai.losses",
    "monai.transforms",
    "matplotlib.pyplot",
    "tifffile",
    "zarr",
    "skimage.segmentation",
)
_warm = False


def _warm_up() -> None:
    global _warm
    if _warm:
        return
    import importlib

    for name in _WARM_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from bioim2im.plugin.manager import get_registry

    get_registry()
    _warm = True


def _fork(argv: list[str], cwd: Path, limits: Limits, env: dict[str, str]) -> CliProcess:
    _warm_up()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        # Python 3.12 warns about fork() in a process with threads; the child below only
        # runs the CLI, it does not touch locks the parent's other threads might hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid:
        os.close(out_w)
        os.close(err_w)
        return CliProcess(pid, None, {out_r: "out", err_r: "err"})
    code = 1
    try:
        os.close(out_r)
        os.close(err_r)
        _child(argv, cwd, limits, env, out_w, err_w)
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        _flush()
        # As CPython does for an unhandled KeyboardInterrupt: die by SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
    else:
        code = 0
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        _flush()
        os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


def _child(
    argv: list[str], cwd: Path, limits: Limits, env: dict[str, str], out_w: int, err_w: int
) -> None:
    """The forked process: become a plain ``bioim2im ARGV`` and run it."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in (devnull, out_w, err_w):
        if fd > 2:
            os.close(fd)
    sys.stdin = open(0, closefd=False, encoding="utf-8")  # noqa: SIM115
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True
    )
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )
    # What pytest set up in this process is not the CLI's: default warnings, no log capture,
    # no exit handlers of the test process, Python's own signal handlers.
    atexit._clear()
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    logging.root.handlers.clear()
    # Python's own start-up state: KeyboardInterrupt on SIGINT, SIGPIPE and SIGXFSZ ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_IGN)
    os.environ.update(env)
    os.chdir(cwd)
    _apply_limits(limits)
    sys.argv = ["bioim2im", *argv]
    from bioim2im.cli import main

    main()


# ---- what changed on disk -----------------------------------------------------------------
Snapshot = dict[str, tuple[str, int, int]]


def snapshot(*roots: Path) -> Snapshot:
    """Every entry under ``roots``: kind, size and modification time (files only)."""
    entries: Snapshot = {}
    for root in roots:
        if not root.exists():
            continue
        entries[str(root)] = _entry(root)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    entries[path] = _entry(Path(path))
    return entries


def _entry(path: Path) -> tuple[str, int, int]:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return ("link", 0, 0)
    if stat.S_ISDIR(info.st_mode):
        return ("dir", 0, 0)
    return ("file", info.st_size, info.st_mtime_ns)


def changes(before: Snapshot, after: Snapshot, allowed: Iterable[Path] = ()) -> list[str]:
    """Entries added, removed or modified outside ``allowed`` (paths and what is under them)."""
    allowed_paths = [str(Path(p).absolute()) for p in allowed]

    def inside(path: str) -> bool:
        return any(path == a or path.startswith(a.rstrip("/") + "/") for a in allowed_paths)

    found = []
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path) and not inside(path):
            what = "added" if path not in before else "removed" if path not in after else "changed"
            found.append(f"{what}: {path}")
    return found


ZARR_METADATA = frozenset({".zgroup", ".zarray", ".zattrs", ".zmetadata"})
MARKERS = frozenset({".bioim2im-run", ".bioim2im-export", ".bioim2im-demo"})
"""The files that say bioim2im made a folder (a run, a folder export, a demo)."""


def stray_files(folder: Path, keep: Iterable[str] = ()) -> list[str]:
    """Hidden, partial or temporary entries under ``folder`` (zarr v2 metadata, bioim2im's
    markers and names in ``keep`` excepted)."""
    kept = set(keep) | ZARR_METADATA | MARKERS
    found: list[str] = []
    if not folder.exists():
        return found
    for path in folder.rglob("*"):
        name = path.name
        if name in kept:
            continue
        if name.startswith(".") or re.search(r"partial|\.tmp|tmp-|\.old-|~$", name, re.I):
            found.append(str(path.relative_to(folder)))
    return found


# ---- TOML -----------------------------------------------------------------------------------
def toml_value(value: Any) -> str:
    """``value`` as a TOML inline value (tables inline, keys quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (datetime, date, daytime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return (
            "{"
            + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_document(table: Mapping[str, Any]) -> str:
    """A TOML document of ``table``: one ``key = value`` line per top-level key."""
    return "".join(f"{json.dumps(str(k))} = {toml_value(v)}\n" for k, v in table.items())


def read_toml(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads(text)


def resolved(preset: str | Path, *overrides: str) -> dict[str, Any]:
    """The preset as ``bioim2im check`` prints it, fully resolved."""
    args: list[str | Path] = ["check", preset]
    for text in overrides:
        args += ["--set", text]
    result = invoke(*args)
    assert_ok(result)
    return read_toml(result.out)


def string_leaves(table: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """(path, value) of every string in a nested table; list items are addressed by index."""
    found: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(table, Mapping):
        for key, value in table.items():
            found += string_leaves(value, (*path, key))
    elif isinstance(table, list):
        for index, value in enumerate(table):
            found += string_leaves(value, (*path, index))
    elif isinstance(table, str):
        found.append((path, table))
    return found


def replaced(table: Any, path: Sequence[Any], value: Any) -> Any:
    """A copy of ``table`` with the entry at ``path`` set to ``value``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(table, list):
        copy = list(table)
        copy[head] = replaced(copy[head], rest, value)
        return copy
    copy_table = dict(table)
    copy_table[head] = replaced(copy_table.get(head, {}), rest, value)
    return copy_table


# ---- checkpoints ----------------------------------------------------------------------------
def load_weights(path: Path) -> dict[str, Any]:
    """A checkpoint as a user would open it: ``torch.load(weights_only=True)``."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and isinstance(state.get("model"), dict), path
    return state


def wait_until(condition: Any, process: CliProcess, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"bioim2im ended before {what}\n{process.wait()}")
        if time.monotonic() > deadline:
            process.send_signal(signal.SIGKILL)
            raise AssertionError(f"timed out waiting for {what}\n{process.wait()}")
        time.sleep(0.005)


def metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a kill may cut the last line
            rows.append(json.loads(line))
    return rows


def logged_steps(run_dir: Path) -> list[int]:
    return [int(r["step"]) for r in metric_rows(run_dir) if "loss" in r]


# ---- a user's folder, and what a command did to it ---------------------------------------
def fingerprint(root: Path) -> dict[str, str]:
    """Every path under ``root``: a file's SHA-256, "dir", or a link's target."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def lost_or_changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [
        f"{'removed' if key not in after else 'changed'}: {key}"
        for key, value in before.items()
        if after.get(key) != value
    ]


@dataclass
class Workspace:
    """A user's folder: their files, a run, images, earlier predictions."""

    root: Path
    run: Path
    image: Path
    """A TIFF image (64 x 64)."""
    zarr_folder: Path
    """A folder holding ``img.ome.zarr`` (the image as OME-Zarr) and the user's notes."""
    user: Path
    """A folder of the user's: notes.txt, metrics.jsonl, loss_curve.png, sub/table.csv."""
    user_file: Path
    """A file of the user's: results.json."""
    truth: Path
    """A folder of masks (GT/)."""
    mask: Path
    """A copy of the first mask of GT/."""
    preset: Path
    """The tiny preset, with a comment and ``extends``, in its own folder proj/."""

    def __getitem__(self, name: str) -> Path:
        return self.root / name


def make_workspace(tmp_path: Path, trained_run: Path, nuclei_data: Path) -> Workspace:
    """A user's folder ``tmp_path/ws`` (see :class:`Workspace`), with a copy of the trained run."""
    from bioim2im.io import open_image
    from bioim2im.io.omezarr import write_ome_zarr

    root = tmp_path / "ws"
    root.mkdir()
    run = Path(shutil.copytree(trained_run, root / "run"))
    first = sorted((nuclei_data / "IM").glob("*.tif"))[0]
    image = Path(shutil.copy(first, root / "img.tif"))
    zarr_folder = root / "images"
    zarr_folder.mkdir()
    write_ome_zarr(zarr_folder / "img.ome.zarr", open_image(image).read(), axes="YX")
    (zarr_folder / "notes.txt").write_text("where these came from", encoding="utf-8")
    user = root / "user"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("months of work", encoding="utf-8")
    (user / "metrics.jsonl").write_text('{"mine": 1}\n', encoding="utf-8")
    (user / "loss_curve.png").write_bytes(b"\x89PNG not really")
    (user / "sub" / "table.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    user_file = root / "results.json"
    user_file.write_text('{"precious": true}\n', encoding="utf-8")
    truth = Path(shutil.copytree(nuclei_data / "GT", root / "GT"))
    mask = Path(shutil.copy(first_truth_of(truth), root / "mask.tif"))
    proj = root / "proj"
    proj.mkdir()
    preset = proj / "tiny.toml"
    preset.write_text("# my notes on this preset\n" + tiny_unet_toml(nuclei_data), encoding="utf-8")
    (root / "link-to-user").symlink_to(user, target_is_directory=True)
    (root / "empty").mkdir()
    return Workspace(root, run, image, zarr_folder, user, user_file, truth, mask, preset)


def first_truth_of(folder: Path) -> Path:
    return sorted(folder.glob("*.tif"))[0]


# ---- files that never end -------------------------------------------------------------------
ENDLESS = ["fifo", "/dev/zero", "/dev/urandom"]


def endless(kind: str, where: Path) -> Path:
    """A FIFO at ``where`` (nobody writes to it), or a link there to an endless device."""
    where.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(where)
    else:
        where.symlink_to(kind)
    return where


# ---- remote stores that never answer ---------------------------------------------------------
REMOTE_TIMEOUT = 1.0
"""``BIOIM2IM_REMOTE_TIMEOUT`` of the tests of hostile servers (seconds)."""
ENOUGH = 20.0
"""How long a call may take at most: the timeout, the retries and starting the client."""


class _Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "hang"
    stop: threading.Event

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        if self.mode == "hang":
            self.stop.wait(60)  # never answers while the test runs
        elif self.mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not self.stop.wait(0.05):  # a byte every 50 ms: never silent for long
                try:
                    self.wfile.write(b"{")
                    self.wfile.flush()
                except OSError:
                    return
        else:
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = _answer


@contextlib.contextmanager
def hostile_servers() -> Iterator[Callable[[str], str]]:
    """``start(mode)``: ``http://127.0.0.1:PORT`` of a server that hangs, trickles or
    redirects to ``file:///etc/passwd``."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Event]] = []

    def start(mode: str) -> str:
        stop = threading.Event()
        handler = type("Handler", (_Hostile,), {"mode": mode, "stop": stop})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.block_on_close = False  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, stop))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, stop in servers:
        stop.set()
        server.shutdown()
        server.server_close()


def ended_within(call: Callable[[], Any], seconds: float = ENOUGH) -> BaseException:
    """What ``call`` raised, asserting it ended within ``seconds`` (in a thread, so that a
    call that never ends fails the test instead of hanging it)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s"
    assert outcome[0] is not None, "ended without an error"
    assert time.monotonic() - started < seconds
    return outcome[0]
