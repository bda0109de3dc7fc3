"""Issue 11, point 3: ``train.init_from`` silently loaded only the tensors whose shapes
matched. It reports on stderr what was loaded and skipped, and refuses (exit 2) when nothing
matches, or when less than ``train.init_min_fraction`` (default 0.5) of the model's parameter
elements would be loaded, unless ``train.init_partial = true`` says partial loading is meant.

The checkpoints below are a real run's, with tensors removed or renamed as a user's older or
foreign checkpoint would have them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hostile_helpers import assert_ok, assert_user_error, invoke

from tiny_presets import tiny_unet_toml


def _variant(trained_run: Path, path: Path, keep: Callable[[str], bool], prefix: str = "") -> Path:
    state = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    state["model"] = {prefix + k: v for k, v in state["model"].items() if keep(k)}
    torch.save(state, path)
    return path


def _train(preset: Path, run: Path, *overrides: str):
    args: list[str | Path] = ["train", preset, "--run-dir", run, "--set", "train.steps=2"]
    for text in overrides:
        args += ["--set", text]
    return invoke(*args)


def _model_elements(trained_run: Path) -> int:
    state = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    return sum(v.numel() for v in state["model"].values())


def test_a_mostly_matching_checkpoint_loads_and_says_what_was_skipped(
    trained_run: Path, tiny_preset, tmp_path: Path
) -> None:
    # Everything but the head: > 99 % of the elements.
    source = _variant(trained_run, tmp_path / "no_head.pt", lambda k: not k.startswith("heads."))
    result = _train(tiny_preset(), tmp_path / "run", f'train.init_from="{source}"')
    assert_ok(result)
    err = result.err.lower()
    assert "load" in err and "skip" in err, result
    # The report names the skipped head tensors, or at least counts them.
    report = "\n".join(err[err.index("skip") :].splitlines()[:6])
    assert "heads.seg" in report or re.search(r"\b2\b", report), result


def test_a_checkpoint_of_another_network_is_refused(
    trained_run: Path, tmp_path: Path, nuclei_data: Path
) -> None:
    """The issue's case: a run with other channel counts; only a few 1-element tensors (PReLU
    weights, the head's bias) have matching shapes."""
    preset = tmp_path / "small.toml"
    preset.write_text(tiny_unet_toml(nuclei_data), encoding="utf-8")
    result = _train(
        preset,
        tmp_path / "run",
        f'train.init_from="{trained_run}"',
        "model.backbone.channels=[4, 8]",
        "model.features=4",
    )
    assert_user_error(result, "init_from")
    assert re.search(r"\d", result.err.split("error:", 1)[1]), result
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_below_the_share_needs_init_partial(trained_run: Path, tiny_preset, tmp_path: Path) -> None:
    # The first level of the backbone only: 1,250 of 2,995 elements (42 %).
    first = ("backbone.model.0.", "backbone.model.1.submodule.")
    source = _variant(trained_run, tmp_path / "partial.pt", lambda k: k.startswith(first))
    loaded = sum(
        v.numel() for v in torch.load(source, weights_only=True)["model"].values()
    ) / _model_elements(trained_run)
    assert 0.2 < loaded < 0.5
    init = f'train.init_from="{source}"'

    refused = _train(tiny_preset(), tmp_path / "refused", init)
    assert_user_error(refused, "init_from")

    lowered = _train(tiny_preset(), tmp_path / "lowered", init, "train.init_min_fraction=0.2")
    assert_ok(lowered)

    meant = _train(tiny_preset(), tmp_path / "meant", init, "train.init_partial=true")
    assert_ok(meant)
    assert "skip" in meant.err.lower(), meant


def test_nothing_matching_is_refused_even_when_partial_loading_is_meant(
    trained_run: Path, tiny_preset, tmp_path: Path
) -> None:
    source = _variant(trained_run, tmp_path / "foreign.pt", lambda k: True, prefix="other.")
    for extra in ((), ("train.init_partial=true",)):
        result = _train(
            tiny_preset(), tmp_path / f"run{len(extra)}", f'train.init_from="{source}"', *extra
        )
        assert_user_error(result, "init_from")


@pytest.mark.parametrize("value", ["0", "0.0", "1.5", "-0.1", "true", '"half"'])
def test_init_min_fraction_must_be_a_share(tiny_preset, value: str) -> None:
    result = invoke("check", tiny_preset(), "--set", f"train.init_min_fraction={value}")
    assert_user_error(result, "init_min_fraction")


def test_init_partial_and_init_min_fraction_are_preset_keys(tiny_preset) -> None:
    result = invoke(
        "check",
        tiny_preset(),
        "--set",
        "train.init_partial=true",
        "--set",
        "train.init_min_fraction=0.25",
    )
    assert_ok(result)
    assert re.search(r"init_partial\s*=\s*true", result.out), result
    assert re.search(r"init_min_fraction\s*=\s*0\.25", result.out), result
