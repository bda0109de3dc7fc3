"""Every registered component, built from a minimal preset and run once (timm style).

Parametrized over the live registry, so a component is tested the day it is registered: a preset
that `check` accepts must build, and its network must train a step. A component whose required
parameters have no example below fails ``test_every_required_parameter_has_an_example``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bioim2im.config.loading import validate
from bioim2im.data.preparation import augmentation, preparation, sample_keys
from bioim2im.model.network import build_losses, build_model
from bioim2im.plugin.hookspecs import Values
from bioim2im.plugin.manager import get_registry

REGISTRY = get_registry()
COMPONENTS = [(c.kind, c.name) for c in REGISTRY]

# Values for parameters that have no default.
EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("backbone", "unetr"): {
        "img_size": [32, 32],
        "feature_size": 4,
        "hidden_size": 48,
        "mlp_dim": 96,
        "num_heads": 2,
    },
    ("transform", "fixed_range"): {"min": 0.0, "max": 1.0},
    ("transform", "monai"): {"transform": "RandGaussianNoised", "args": {"prob": 1.0}},
    ("scheduler", "step"): {"step_size": 5},
}
# Smaller than the defaults, only to keep the test fast.
TINY: dict[tuple[str, str], dict[str, Any]] = {
    ("backbone", "unet"): {"channels": [4, 8], "strides": [2], "num_res_units": 0},
    ("backbone", "attention_unet"): {"channels": [4, 8], "strides": [2]},
    ("backbone", "basic_unet"): {"features": [4, 4, 8, 8, 16, 4]},
    ("backbone", "segresnet"): {"init_filters": 8},
    ("backbone", "swin_unetr"): {"feature_size": 12, "depths": [1, 1, 1, 1]},
    ("backbone", "dynunet"): {"filters": [4, 8, 16], "strides": [1, 2, 2]},
}

BASE: dict[str, Any] = {
    "data": {"patch_size": [32, 32], "batch_size": 2, "normalize": {"name": "percentile"}},
    "model": {
        "in_channels": 1,
        "features": 4,
        "backbone": {"name": "unet", **TINY["backbone", "unet"]},
        "heads": {
            "seg": {
                "name": "conv",
                "task": "semantic",
                "out_channels": 1,
                "loss": {"name": "dice_ce", "sigmoid": True},
                "postprocess": [{"name": "sigmoid"}, {"name": "threshold"}],
                "metrics": [{"name": "dice"}],
            }
        },
    },
    "train": {"optimizer": {"name": "adamw", "lr": 1e-3}, "scheduler": {"name": "constant"}},
}


def _spec(kind: str, name: str) -> dict[str, Any]:
    return {"name": name, **EXAMPLES.get((kind, name), {}), **TINY.get((kind, name), {})}


def _preset_with(kind: str, name: str) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    head = data["model"]["heads"]["seg"]
    if kind == "backbone":
        data["model"]["backbone"] = _spec(kind, name)
        if name == "swin_unetr":  # a window of 32 leaves one voxel at its bottom
            data["data"]["patch_size"] = [64, 64]
    elif kind == "head":
        head.update(_spec(kind, name))
        if name == "identity":  # its output is the backbone's features
            head["out_channels"] = data["model"]["features"]
        if name == "projection":
            data["data"]["patch_size"] = [4, 32, 32]
        channels = REGISTRY.get(kind, name).extras.get("out_channels")
        if channels is not None:  # its channels mean fixed things
            head["out_channels"] = channels(len(data["data"]["patch_size"]))
    elif kind == "loss":
        head["loss"] = _spec(kind, name)
        channels = REGISTRY.get(kind, name).extras.get("out_channels")
        if channels is not None:  # a loss of an instance head with its own target
            head.update(task="instance", out_channels=channels(2), postprocess=[], metrics=[])
        elif name in ("mse", "l1", "smooth_l1", "ssim"):
            head.update(task="regression", postprocess=[], metrics=[{"name": "mae"}])
        elif name == "ce" or name == "focal":
            head["loss"].update(_class_indices(name))
            head["out_channels"] = 2
            head["postprocess"] = [{"name": "softmax"}, {"name": "argmax"}]
        elif "sigmoid" in REGISTRY.get(kind, name).params.model_fields:
            head["loss"]["sigmoid"] = True
    elif kind == "transform":
        role = REGISTRY.get(kind, name).extras.get("role")
        if role == "normalize":
            data["data"]["normalize"] = _spec(kind, name)
        else:
            data["data"]["augment"] = [_spec(kind, name)]
    elif kind == "postprocessor" and name == "embedseg_cluster":  # decodes EmbedSeg outputs
        head.update(
            name="embedseg",
            task="instance",
            out_channels=5,
            loss={"name": "embedseg"},
            postprocess=[_spec(kind, name)],
            metrics=[{"name": "instance_ap"}],
        )
    elif kind == "postprocessor":
        # Steps on masks or labels (hole filling, size filters, connected components) follow a
        # threshold.
        head["postprocess"] = [
            {"name": "sigmoid"},
            *([{"name": "threshold"}] if _takes_masks(name) else []),
            _spec(kind, name),
        ]
    elif kind == "metric":
        head["metrics"] = [_spec(kind, name)]
    elif kind in ("optimizer", "scheduler"):
        data["train"][kind] = _spec(kind, name)
    elif kind == "discriminator":
        data["adversarial"] = {"discriminator": {**_spec(kind, name), "layers": 1}}
        head.update(task="regression", loss={"name": "l1"}, postprocess=[], metrics=[])
    return data


def _takes_masks(name: str) -> bool:
    """Whether a postprocessor refuses probabilities (by its `values` extra; without one, a step
    that is neither pointwise nor numbers objects is taken to work on masks)."""
    component = REGISTRY.get("postprocessor", name)
    values = component.extras.get("values")
    if values is None:
        return not (component.extras.get("pointwise") or component.extras.get("labels"))
    spec = {k: v for k, v in _spec("postprocessor", name).items() if k != "name"}
    params = component.params.model_validate(spec).model_dump()
    try:
        values(Values(1, "probabilities"), spatial_dims=2, **params)
    except ValueError:
        return True
    return False


def _class_indices(name: str) -> dict[str, Any]:
    return {} if name == "ce" else {"softmax": True, "to_onehot_y": True}


def _target(kind: str, name: str, shape: tuple[int, ...], task: str, loss: str) -> torch.Tensor:
    encode = REGISTRY.get("loss", loss).extras.get("encode_target")
    if encode is not None:  # the target the loss asks for, from instance labels
        labels = np.random.default_rng(0).integers(0, 4, (shape[0], 1, *shape[2:]))
        return torch.from_numpy(np.stack([encode(x.astype(np.float32)) for x in labels]))
    if task == "regression":
        return torch.rand(shape)
    if kind == "loss" and name in ("ce", "focal"):
        return torch.randint(0, shape[1], (shape[0], 1, *shape[2:])).float()
    return (torch.rand(shape) > 0.5).float()


@pytest.mark.parametrize(("kind", "name"), COMPONENTS, ids=[f"{k}-{n}" for k, n in COMPONENTS])
def test_a_checked_preset_builds_and_its_component_runs(
    kind: str, name: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    if kind == "preset":
        _check_shipped_preset_builds(name)
        return
    if kind in ("reader", "writer"):
        _round_trip(kind, name, tmp_path)
        return
    if kind == "logger":
        _log_and_close(name, tmp_path)
        return
    if kind == "evaluation":  # a scoring function the evaluate command calls
        assert callable(REGISTRY.get(kind, name).load())
        return
    if kind == "command":  # a command group of the command line
        import typer

        assert isinstance(REGISTRY.get(kind, name).load(), typer.Typer)
        return
    if kind == "layout":  # a data layout: the object the data modules and export ask
        _check_layout(name)
        return
    preset = validate(_preset_with(kind, name), REGISTRY, f"{kind} {name}")
    dims = preset.spatial_dims
    network = build_model(preset, REGISTRY)
    losses = build_losses(preset, REGISTRY)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = REGISTRY.build("optimizer", preset.train.optimizer, parameters=trainable)
    scheduler = REGISTRY.build(
        "scheduler", preset.train.scheduler, optimizer=optimizer, total_steps=10
    )
    image = torch.rand(2, 1, *preset.data.patch_size)
    outputs = network(image)
    head = preset.model.heads["seg"]
    output = outputs["seg"]
    assert output.shape[:2] == (2, head.out_channels)
    target = _target(kind, name, tuple(output.shape), head.task, head.loss.name)
    loss = losses["seg"](output.float(), target, None)
    assert torch.isfinite(loss)
    loss.backward()
    before = [p.detach().clone() for p in trainable]
    optimizer.step()
    if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable, strict=True))

    values = output[0].detach().numpy()
    for step in head.postprocess:
        values = np.asarray(REGISTRY.build("postprocessor", step)(values))
    truth = (np.random.default_rng(0).random(values.shape) > 0.5).astype(np.int64)
    for metric in head.metrics:
        scores = REGISTRY.build("metric", metric)(values, truth)
        assert scores and all(np.isfinite(v) or np.isnan(v) for v in scores.values())

    prep = preparation(preset, REGISTRY)
    raw = np.random.default_rng(0).random((1, *preset.data.patch_size)).astype(np.float32)
    assert np.isfinite(prep.normalize(raw)).all()
    augment = augmentation(preset, REGISTRY)
    if augment is not None:
        sample = {key: raw.copy() for key in sample_keys(list(preset.model.heads))}
        changed = augment(sample, np.random.default_rng(0))
        assert set(changed) == set(sample)
        assert all(v.shape[1:] == raw.shape[1:] for v in changed.values())

    if preset.adversarial is not None:
        judge = REGISTRY.build(
            "discriminator", preset.adversarial.discriminator, spatial_dims=dims, in_channels=3
        )
        assert torch.isfinite(judge(torch.rand(1, 3, *preset.data.patch_size))).all()


def _check_layout(name: str) -> None:
    """A layout builds from its parameters into an object with the contract's methods (a
    plugin's layout with required parameters is tested by its plugin)."""
    component = REGISTRY.get("layout", name)
    required = {n for n, f in component.params.model_fields.items() if f.is_required()}
    if required - set(EXAMPLES.get(("layout", name), {})):
        assert component.package != "bioim2im", "add an example to EXAMPLES"
        return
    layout = component.build(EXAMPLES.get(("layout", name), {}))
    for method in ("preflight", "datasets", "image_pairs"):
        assert callable(getattr(layout, method, None)), f"layout '{name}' has no {method}()"


def _log_and_close(name: str, run_dir: Path) -> None:
    """A logger takes a record, a snapshot and the end of the run, and writes nothing outside
    the run directory."""
    preset = validate(copy.deepcopy(BASE), REGISTRY, "base").model_dump(mode="json")
    logger = REGISTRY.get("logger", name).build(
        EXAMPLES.get(("logger", name), {}), run_dir=run_dir, preset=preset, start_step=0
    )
    logger.log_metrics(1, {"loss": 0.5, "val/seg/dice": 0.25})
    logger.log_image(1, "snapshot", np.zeros((8, 24), np.uint8))
    logger.close("finished")


def _check_shipped_preset_builds(name: str) -> None:
    from bioim2im.config import load_preset

    preset = load_preset(REGISTRY.get("preset", name).load())
    network = build_model(preset, REGISTRY).eval()
    with torch.no_grad():
        outputs = network(torch.rand(1, preset.model.in_channels, *preset.data.patch_size))
    assert set(outputs) == set(preset.model.heads)


def _round_trip(kind: str, name: str, tmp_path: Path) -> None:
    from bioim2im.io import open_image, write_image

    component = REGISTRY.get(kind, name)
    suffix = component.extras["suffixes"][0]
    array = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    path = tmp_path / f"image{suffix}"
    if kind == "writer":
        write_image(path, array, axes="YX", format=component.extras.get("format", name))
    else:
        write_image(path, array, axes="YX")
    np.testing.assert_array_equal(np.squeeze(open_image(path).read()), array)


def test_every_required_parameter_has_an_example() -> None:
    missing = []
    for component in REGISTRY:
        if component.kind in ("preset", "reader", "writer", "evaluation", "command"):
            continue
        if component.kind == "layout" and component.package != "bioim2im":
            continue  # tested by its plugin, with its own data
        required = {n for n, f in component.params.model_fields.items() if f.is_required()}
        given = set(EXAMPLES.get((component.kind, component.name), {}))
        if required - given:
            missing.append(f"{component.label}: {sorted(required - given)}")
    assert not missing, "add an example to EXAMPLES for: " + "; ".join(missing)


def _network_parts() -> list[tuple[str, str, int]]:
    parts = [(k, n) for k, n in COMPONENTS if k in ("backbone", "head")]
    return [(k, n, d) for k, n in parts for d in (2, 3) if (k, n, d) != ("head", "projection", 2)]


def _in_dims(data: dict[str, Any], kind: str, name: str, dims: int) -> dict[str, Any]:
    """``data`` (a preset from :func:`_preset_with`) with patches of ``dims`` dimensions."""
    patch = data["data"]["patch_size"]
    if len(patch) == dims:
        return data
    data["data"]["patch_size"] = [32 if name == "swin_unetr" else 16, *patch]
    if name == "unetr":
        data["model"]["backbone"]["img_size"] = data["data"]["patch_size"]
    channels = REGISTRY.get(kind, name).extras.get("out_channels") if kind == "head" else None
    if channels is not None:
        data["model"]["heads"]["seg"]["out_channels"] = channels(dims)
    return data


@pytest.mark.parametrize(
    ("kind", "name", "dims"),
    _network_parts(),
    ids=[f"{k}-{n}-{d}d" for k, n, d in _network_parts()],
)
def test_a_networks_torchscript_holds_only_operations_a_model_from_elsewhere_may(
    kind: str, name: str, dims: int
) -> None:
    """What export writes (a trace) passes the check `predict` makes of a graph from elsewhere:
    a component using a tensor operation the allowlist lacks fails here, the day it is
    registered (bioim2im.formats.graphs.allowlist)."""
    from bioim2im.formats.graphs.conversion import (
        load_torchscript,
        to_torchscript,
        torchscript_bytes,
    )
    from bioim2im.model.packaged import HeadsInOrder

    data = _in_dims(_preset_with(kind, name), kind, name, dims)
    preset = validate(data, REGISTRY, f"{kind} {name} in {dims}D")
    network = HeadsInOrder(build_model(preset, REGISTRY), list(preset.model.heads))
    example = torch.zeros(1, 1, *preset.data.patch_size)
    scripted = torchscript_bytes(to_torchscript(network, example), None)
    load_torchscript(scripted, name=f"{kind} {name}")
