"""Test-time augmentation of an EmbedSeg model: its offsets are vectors, so a flipped input's
offset along the flipped axis points the other way and must be negated, not just flipped back,
before the outputs are averaged (the head declares its offset channels at registration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bioim2im.data.synthetic import nuclei, write_dataset
from tiny_presets import tiny_unet_toml

RAW = [
    "model.heads.seg.postprocess=[]",
    'model.heads.seg.output_dtype="float32"',
]


@pytest.fixture(scope="module")
def embedseg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A barely trained 2D EmbedSeg model: what matters is that its outputs are not symmetric."""
    from bioim2im.api import train

    root = tmp_path_factory.mktemp("embedseg")
    data = write_dataset(root / "data", kind="nuclei", n_images=2, shape=(32, 32), seed=3)
    changes = {
        "train.steps": 2,
        "train.val_every": 2,
        "train.checkpoint_every": 2,
        "train.log_every": 2,
        "train.checkpoint_metric": "val/loss",
        "train.checkpoint_mode": "min",
    }
    preset = root / "preset.toml"
    preset.write_text(tiny_unet_toml(data, changes, extends="embedseg-2d"), encoding="utf-8")
    train(preset, run_dir=root / "run")
    return root / "run"


@pytest.mark.parametrize("axes", [[0], [1], [0, 1]])
def test_tta_negates_the_offsets_along_the_flipped_axes(
    embedseg_run: Path, axes: list[int]
) -> None:
    from bioim2im import predict

    image, _ = nuclei((32, 32), seed=5)
    plain = predict(embedseg_run, image, overrides=RAW)["seg"]
    flipped = predict(embedseg_run, np.flip(image, axes).copy(), overrides=RAW)["seg"]
    augmented = predict(embedseg_run, image, overrides=[*RAW, f"predict.tta=[{axes}]"])["seg"]

    # Channels: offset along Y, along X, bandwidth along Y, along X, seed.
    unflipped = np.flip(flipped, [1 + a for a in axes]).copy()
    for axis in axes:
        unflipped[axis] *= -1
    expected = (plain + unflipped) / 2
    assert np.abs(plain[:2]).max() > 1e-3  # offsets large enough for a wrong sign to show
    np.testing.assert_allclose(augmented, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["bioimageio", "torchscript"])
def test_exported_models_keep_the_offsets_directions(
    embedseg_run: Path, tmp_path: Path, kind: str
) -> None:
    from bioim2im.api import export
    from bioim2im.formats import load_model

    written = export(
        embedseg_run, kind, output=tmp_path / ("model.zip" if kind == "bioimageio" else "model.pt")
    )
    loaded = load_model(written.path)
    assert loaded.heads["seg"].geometry.directions == ((0, 0), (1, 1))
