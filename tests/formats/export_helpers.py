"""Helpers of the export tests (a module of its own: conftest is not importable): the trained
run's preset, and per shipped preset, a run of its network made tiny (untrained: exporting does
not depend on what the weights learned)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bioim2im.data.synthetic import nuclei
from bioim2im.io.tiff import write_tiff
from tiny_presets import SIGMOID_HEAD

PRESETS = Path(__file__).resolve().parents[2] / "presets"
TRAINED = {
    "data.batch_size": 4,
    "model.heads.prob": SIGMOID_HEAD,
    "train.steps": 20,
    "train.val_every": 20,
    "train.checkpoint_every": 20,
    "train.log_every": 20,
}
"""The tiny preset (tests/tiny_presets.py) of the trained run: a second head, "prob", that saves
probabilities."""


def tiny_overrides(name: str) -> list[str]:
    """``--set`` values that make a shipped preset's network tiny (as the task tests do)."""
    from bioim2im.config import load_preset

    preset = load_preset(PRESETS / f"{name}.toml")
    dims = len(preset.data.patch_size)
    patch = [16, 32, 32] if dims == 3 else [32, 32]
    heads = [
        f"model.heads.{head}.hidden_channels=4"
        for head, spec in preset.model.heads.items()
        if "hidden_channels" in spec.model_dump(exclude_none=True)
    ]
    return [
        *heads,
        f"data.patch_size={patch}",
        f"predict.roi_size={patch}",
        "model.features=4",
        "model.backbone.channels=[4, 8]",
        "model.backbone.strides=[2]",
        *(
            ["model.backbone.num_res_units=0"]
            if "num_res_units" in preset.model.backbone.params()
            else []
        ),
        "data.num_workers=0",
    ]


def untrained_run(name: str, root: Path) -> Path:
    """A run directory of shipped preset ``name`` made tiny: its resolved preset and a
    checkpoint of its freshly initialised network (a GAN's: the generator, as training saves)."""
    from bioim2im.config import load_preset, to_toml
    from bioim2im.model.checkpoint import save_checkpoint
    from bioim2im.model.network import build_model
    from bioim2im.plugin.manager import get_registry

    preset = load_preset(PRESETS / f"{name}.toml", tiny_overrides(name))
    torch.manual_seed(0)
    network = build_model(preset, get_registry())
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "preset.toml").write_text(to_toml(preset), encoding="utf-8")
    state = {"model": network.state_dict(), "preset": to_toml(preset), "step": 0}
    if preset.adversarial is not None:
        # As a GAN run's checkpoint: the discriminators' weights beside the generator's.
        discriminator = torch.nn.Conv2d(2, 1, 3)
        state["discriminators"] = {"patchgan": discriminator.state_dict()}
    save_checkpoint(state, run / "checkpoints" / "best.pt")
    return run


def nuclei_file(path: Path, shape: tuple[int, ...], seed: int = 0) -> Path:
    image, _ = nuclei(shape, seed=seed)
    image = (np.clip(image, 0, None) * 200 + 10).astype(np.float32)
    write_tiff(path, image, axes="ZYX" if len(shape) == 3 else "YX", compression="none")
    return path


def core_prediction(
    package: Path, image: np.ndarray, weights: str, n: int = 1
) -> dict[str, np.ndarray]:
    """bioimageio.core's blockwise prediction (block size parameter ``n``) of ``image``
    (spatial axes, one channel) by the package at ``package`` (a zip or a folder), per output
    tensor, batch and size-1 axes squeezed."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_description

    from bioim2im.formats.bioimageio.calls import bioimageio_calls

    if not package.is_dir():  # core leaves a zip's file open: read it unpacked
        import zipfile

        folder = package.with_name(f"{package.stem}-unpacked")
        with zipfile.ZipFile(package) as archive:
            archive.extractall(folder)
        package = folder
    source = package / "rdf.yaml"
    with bioimageio_calls():
        descr = load_description(source, perform_io_checks=False)
        (tensor,) = descr.inputs
        sample = create_sample_for_model(descr, inputs={tensor.id: image[None, None]})
        with create_prediction_pipeline(descr, weights_format=weights) as pipeline:
            found = pipeline.predict_sample_with_blocking(sample, ns=n)
    return {str(k): np.asarray(v.data.values).squeeze() for k, v in found.members.items()}
