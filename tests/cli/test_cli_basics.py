"""The command line answers at once and never imports torch for help, listing or checking."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bioim2im import __version__

PRESETS = Path(__file__).resolve().parents[2] / "presets"

PROBE = """
import sys
from bioim2im.cli import main
sys.argv = ["bioim2im", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "monai", "zarr", "scipy", "skimage") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("list-plugins", "--json"),
        ("check", str(PRESETS / "segmentation-2d.toml")),
        ("presets", "show", "segmentation-2d"),
        ("options", "model.backbone"),
        ("schema",),
        ("list-plugins", "--params"),
    ],
)
def test_light_commands_do_not_import_heavy_libraries(args: tuple[str, ...]) -> None:
    result = _probe(*args)
    assert "HEAVY=\n" in result.stderr or result.stderr.rstrip().endswith("HEAVY="), result.stderr


def test_version(cli) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"bioim2im {__version__}"


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bioim2im", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_help_lists_commands(cli) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in ("train", "check", "list-plugins"):
        assert command in result.out


def test_list_plugins_json_has_every_kind_with_provenance(cli) -> None:
    result = cli("list-plugins", "--json")
    assert result.code == 0
    rows = json.loads(result.out)
    assert all(set(row) == {"kind", "name", "package", "version", "description"} for row in rows)
    by_kind: dict[str, set[str]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], set()).add(row["name"])
    assert {
        "unet",
        "basic_unet",
        "attention_unet",
        "dynunet",
        "segresnet",
        "unetr",
        "swin_unetr",
    } <= by_kind["backbone"]
    assert {"identity", "conv", "projection"} <= by_kind["head"]
    assert {
        "dice",
        "dice_ce",
        "dice_focal",
        "focal",
        "bce",
        "ce",
        "mse",
        "l1",
        "smooth_l1",
        "tversky",
        "generalized_dice",
        "ssim",
    } <= by_kind["loss"]
    assert {
        "sigmoid",
        "softmax",
        "argmax",
        "threshold",
        "connected_components",
        "remove_small_objects",
        "fill_holes",
        "watershed",
    } <= by_kind["postprocessor"]
    assert {
        "flip",
        "rot90",
        "gaussian_noise",
        "gamma",
        "contrast",
        "blur",
        "elastic",
        "affine",
        "percentile",
        "zscore",
        "minmax",
    } <= by_kind["transform"]
    assert {"dice", "iou", "instance_ap", "psnr", "ssim", "pearson"} <= by_kind["metric"]
    assert {
        "segmentation-2d",
        "segmentation-3d",
        "instance-2d",
        "instance-3d",
        "labelfree-3d",
        "restoration-2d",
        "n2v-2d",
        "pix2pix-2d",
        "multitask-3d",
    } <= by_kind["preset"]
    unet = next(r for r in rows if r["kind"] == "backbone" and r["name"] == "unet")
    assert unet["package"] == "bioim2im"
    assert unet["version"] == __version__
    assert unet["description"]


def test_list_plugins_kind_filter_and_table(cli) -> None:
    result = cli("list-plugins", "--kind", "loss", "--json")
    assert result.code == 0
    assert {row["kind"] for row in json.loads(result.out)} == {"loss"}
    table = cli("list-plugins", "--kind", "backbone")
    assert table.code == 0
    assert "unet" in table.out and "bioim2im" in table.out


def test_list_plugins_unknown_kind_suggests(cli) -> None:
    result = cli("list-plugins", "--kind", "losses")
    assert result.code == 2
    assert "did you mean 'loss'" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("train", "--set"), "Option '--set' requires an argument."),
        (("nosuch",), "No such command 'nosuch'."),
        (("check",), "Missing argument 'preset'."),
    ],
)
def test_a_malformed_command_line_is_one_error_line(cli, args, words) -> None:
    result = cli(*args)
    assert result.code == 2
    assert result.err.startswith("error: ") and words in result.err
    assert result.err.count("\n") == 1 and "╭" not in result.err
