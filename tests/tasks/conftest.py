"""End-to-end task tests: a shipped preset trains on synthetic data, predicts held-out images,
and beats a trivial baseline computed from the same data.

Every test trains the shipped preset through ``--set`` overrides that only make it small
(:func:`task_helpers.tiny`): a tiny U-Net, small patches, a few dozen steps on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bioim2im.data.synthetic import write_dataset


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, Path]]:
    """``synthetic(kind, shape, **options)`` -> (training folder, held-out folder), written once
    per session; held-out images have another seed."""
    made: dict[str, tuple[Path, Path]] = {}

    def make(
        kind: str, shape: Sequence[int], *, n_images: int = 8, n_held_out: int = 3, **options: Any
    ) -> tuple[Path, Path]:
        key = repr((kind, tuple(shape), n_images, n_held_out, sorted(options.items())))
        if key not in made:
            root = tmp_path_factory.mktemp(kind)
            made[key] = (
                write_dataset(
                    root / "train", kind=kind, n_images=n_images, shape=shape, seed=0, **options
                ),
                write_dataset(
                    root / "held_out",
                    kind=kind,
                    n_images=n_held_out,
                    shape=shape,
                    seed=1,
                    **options,
                ),
            )
        return made[key]

    return make
