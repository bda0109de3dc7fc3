"""An untrained run of the segmentation-2d preset with the overrides given; with batch
normalisation (a network whose output does not depend on the window), its running statistics
are drawn away from 0 and 1 so that they matter. Agreement tests (halo tiling, bioimageio.core)
then do not depend on what the network learned."""

from __future__ import annotations

from pathlib import Path

import torch

PRESETS = Path(__file__).resolve().parents[1] / "presets"


def segmentation_run(root: Path, *overrides: str) -> Path:
    from bioim2im.config import load_preset, to_toml
    from bioim2im.model.checkpoint import save_checkpoint
    from bioim2im.model.network import build_model
    from bioim2im.plugin.manager import get_registry

    preset = load_preset(PRESETS / "segmentation-2d.toml", list(overrides))
    torch.manual_seed(0)
    network = build_model(preset, get_registry())
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "preset.toml").write_text(to_toml(preset), encoding="utf-8")
    state = {"model": network.state_dict(), "preset": to_toml(preset), "step": 0}
    save_checkpoint(state, run / "checkpoints" / "best.pt")
    return run
