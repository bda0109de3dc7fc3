"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s plugins`, `nox -s bench`,
`nox -s fuzz`, `nox -s bioimageio_newest`."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
# torch first, pinned: on these machines 2.13.0 is a small local CPU build; an unpinned torch
# would pull a multi-GB CUDA build.
TORCH = "torch==2.13.0"


@nox.session
def tests(session: nox.Session) -> None:
    session.install(TORCH)
    session.install(
        "-e", ".[dev]", "-e", "plugins/bioim2im-cellmap[testing]", "-e", "plugins/napari-bioim2im[testing]"
    )  # fmt: skip
    session.run("pytest", "-q", *session.posargs)


# bioimageio.core 0.11 (the newest) pins bioimageio.spec 0.5.12; the newest spec is installed
# beside it by hand, with core's own dependencies (what a model-zoo reviewer may well run).
NEWEST_SPEC = "bioimageio.spec==0.5.14.*"
CORE = "bioimageio.core==0.11.*"
CORE_DEPENDENCIES = [
    "imagecodecs",
    "imageio>=2.10",
    "loguru",
    "numpy",
    "pydantic-settings>=2.5,<3",
    "ruyaml",
    "scipy",
    "tqdm",
    "typing-extensions",
    "xarray>=2023.01",
]


@nox.session(name="bioimageio_newest")
def bioimageio_newest(session: nox.Session) -> None:
    """bioimage.io packages bioim2im exported, tested by bioimageio.core under the newest
    bioimageio.spec in an environment WITHOUT bioim2im, every weights format.

    The packages come from the test suite (`BIOIM2IM_EXPORTED_PACKAGES=.ci/packages pytest`:
    one per shipped preset, made tiny); give another folder as the session's argument.
    """
    folder = Path(session.posargs[0] if session.posargs else ".ci/packages")
    packages = sorted(folder.glob("*.zip"))
    if not packages:
        session.error(
            f"no packages in {folder}: run the tests with BIOIM2IM_EXPORTED_PACKAGES={folder}"
        )
    session.install(TORCH)
    session.install(NEWEST_SPEC, "monai>=1.3", "onnxruntime>=1.17", *CORE_DEPENDENCIES)
    session.install("--no-deps", CORE)
    session.run("python", ".ci/bioimageio_newest.py", *map(str, packages))


@nox.session
def fuzz(session: nox.Session) -> None:
    """The hostile-input suite with many random examples, its long variants, and every
    command in a fresh `python -m bioim2im` process (CI runs a small, derandomized share)."""
    session.install(TORCH)
    session.install("-e", ".[dev]", "-e", "plugins/bioim2im-cellmap")
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:randomly",
        "tests/hostile",
        "plugins/bioim2im-cellmap/tests",
        *session.posargs,
        env={"BIOIM2IM_FUZZ": "thorough", "BIOIM2IM_HOSTILE_SPAWN": "1", "OMP_NUM_THREADS": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "plugins")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "plugins")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[dev]", "-e", "plugins/bioim2im-cellmap")
    session.run("mypy")


@nox.session
def plugins(session: nox.Session) -> None:
    """Install the plugins of plugins/ and check that bioim2im discovers them."""
    session.install(TORCH)
    session.install(
        "-e", ".", "-e", "plugins/bioim2im-example", "-e", "plugins/bioim2im-mlflow",
        "-e", "plugins/bioim2im-bioio[czi]", "-e", "plugins/bioim2im-cellmap",
    )  # fmt: skip
    session.run("bioim2im", "list-plugins", "--kind", "backbone")
    session.run("bioim2im", "list-plugins", "--kind", "logger", "--params")
    session.run("bioim2im", "list-plugins", "--kind", "reader")
    session.run(
        "bioim2im",
        "check",
        "plugins/bioim2im-example/src/bioim2im_example/presets/example-denoise-2d.toml",
    )
    session.run("bioim2im", "list-plugins", "--kind", "layout", "--params")
    session.run("bioim2im", "check", "cellmap-3d")
    session.run("bioim2im", "cellmap", "--help")


@nox.session
def bench(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[dev]")
    for script in ("bench_data.py", "bench_train.py", "bench_predict.py"):
        session.run("python", f"benchmarks/{script}", *session.posargs)
