"""Fuzz: combinations of commands, options and values (existing and missing paths, files
where folders belong and back, odd numbers, unicode). Every run ends with exit 0, or exit 2
and one message without a traceback. No file outside the output paths it was given changes;
a refused command (exit 2) keeps every file that was there and writes nothing, except the
predictions of the inputs `predict` could handle."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from hostile_helpers import (
    Result,
    changes,
    ended_cleanly,
    examples,
    invoke,
    snapshot,
)
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tiny_presets import tiny_unet_toml

# Placeholders, made real in each example's own folder (see _materialise).
PRESETS = [
    "@preset",
    "@bad_preset",
    "@missing.toml",
    "@data",
    "@file",
    "segmentation-2d",
    "@run/preset.toml",
    "",
    "@deep/../preset.toml",
]
MODELS = ["@run", "@run/checkpoints/last.pt", "@preset", "@file", "@missing", "@data", ""]
INPUTS = [
    "@data/IM",
    "@data/IM/img_000.tif",
    "@data/IM/*.tif",
    "@data/GT",
    "@file",
    "@missing.tif",
    "@data",
    "",
    "@manifest.csv",
    "@data/IM/[",
    "@run",
]
TRUTHS = ["@data/GT", "@data/IM", "@data/GT/img_000.tif", "@missing", "@file", "@data", ""]
OUTPUTS = [
    "@out",
    "@out/deeper",
    "@victim",
    "@file",
    "@file/inside",
    ".",
    "",
    "@data",
    "@run",
    "@out/report.json",
]
SETS = [
    "train.steps=3",
    "train.steps=0",
    "train.steps=true",
    "train.steps=-1",
    "train.lr=1",
    "train.optimizer.lr=0.001",
    "train.optimizer.lr=-1",
    "train.optimizer.lr=nan",
    "data.patch_size=[32, 32]",
    "data.patch_size=[32]",
    "data.patch_size=[33, 33]",
    "predict.roi_size=[0, 0]",
    "predict.roi_size=[32, 32]",
    "predict.roi_size=[48, 48]",
    "predict.overlap=0.5",
    "predict.overlap=1",
    "predict.tta=true",
    "predict.batch_size=0",
    "model.backbone.channels=[4, 8]",
    "model.backbone.channels=[]",
    "model.heads.seg.task=x",
    "logging.snapshots=true",
    "data.path=@data",
    "data.path=@missing",
    "train.init_from=@run",
    "train.init_from=@file",
    "x=1",
    "=",
    "train",
    "train.steps",
    "a..b=1",
    "é=ü",
    "data.num_workers=0",
    "data.cache=none",
    "predict.format=tiff",
]
FLAGS = {
    "check": ["--data"],
    "predict": ["--overwrite"],
    "list-plugins": ["--json"],
    "train": [],
    "evaluate": [],
}
junk = st.one_of(
    st.sampled_from(["--nope", "-x", "--", "--help", "--set", "-o", "--json"]), st.text(max_size=10)
)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(["check", "train", "predict", "evaluate", "list-plugins"]))
    args = [command]

    def maybe(option: str, pool: list[str], chance: bool = True) -> None:
        if draw(st.booleans()) if chance else True:
            args.extend([option, draw(st.sampled_from(pool))])

    if command == "check":
        args.append(draw(st.sampled_from(PRESETS)))
    elif command == "train":
        if draw(st.booleans()):
            args.append(draw(st.sampled_from(PRESETS)))
        maybe("--resume", ["@run", "@missing", "@file", "@data", "@victim"])
        maybe("--run-dir", OUTPUTS)
        maybe("--devices", ["0", "1", "-1", "x", "1.5"])
        # Training is kept short: later --set values win, so this one comes last.
        args.extend(["--set", "train.steps=3"]) if draw(st.booleans()) else None
    elif command == "predict":
        args.append(draw(st.sampled_from(MODELS)))
        maybe("-i", INPUTS, chance=draw(st.integers(0, 5)) == 0)
        maybe("-o", OUTPUTS, chance=draw(st.integers(0, 5)) == 0)
        maybe("--format", ["tiff", "ome-zarr", "png", ""])
        maybe("--devices", ["0", "1", "x"])
    elif command == "evaluate":
        maybe("-p", [*TRUTHS, "@pred"], chance=draw(st.integers(0, 5)) == 0)
        maybe("-t", TRUTHS, chance=draw(st.integers(0, 5)) == 0)
        maybe("--task", ["auto", "semantic", "instance", "regression", "nope"])
        maybe("--head", ["seg", "nope", ""])
        maybe("--json", OUTPUTS)
        maybe("--csv", OUTPUTS)
    else:
        maybe("--kind", ["backbone", "transform", "preset", "nope", ""])
    for _ in range(draw(st.integers(0, 3)) if command != "list-plugins" else 0):
        args.extend(["--set", draw(st.sampled_from(SETS))])
    if FLAGS[command] and draw(st.booleans()):
        args.append(FLAGS[command][0])
    if draw(st.integers(0, 9)) == 0:
        args.insert(draw(st.integers(1, len(args))), draw(junk))
    return args


OUTPUT_OPTIONS = {"--run-dir", "-o", "--json", "--csv", "--resume"}


def _materialise(args: list[str], root: Path) -> tuple[list[str], list[Path]]:
    """Replace placeholders by paths under ``root``; return the arguments and output paths."""
    real = [a.replace("@", f"{root}/") if "@" in a else a for a in args]
    outputs = [Path(root / "runs")] if real[0] == "train" else []
    for option, value in itertools.pairwise(real):
        if option in OUTPUT_OPTIONS:
            outputs.append(Path(value or ".").absolute() if value not in (".", "") else root)
    # The folders an output path needs are made for it (only those that are not there yet).
    outputs += [
        parent
        for path in list(outputs)
        for parent in path.parents
        if root in parent.parents and not parent.exists()
    ]
    return real, outputs


def _example_folder(root: Path, nuclei_data: Path, trained_run: Path) -> None:
    shutil.copytree(nuclei_data, root / "data")
    shutil.copytree(trained_run, root / "run")
    (root / "preset.toml").write_text(tiny_unet_toml(root / "data"), encoding="utf-8")
    (root / "bad_preset.toml").write_text("[data\npath = 1", encoding="utf-8")
    (root / "file").write_text("a plain file", encoding="utf-8")
    (root / "victim").mkdir()
    (root / "victim" / "keep.txt").write_text("keep me", encoding="utf-8")
    (root / "pred").mkdir()
    shutil.copy(root / "data" / "GT" / "img_000.tif", root / "pred" / "img_000.tif")
    (root / "manifest.csv").write_text(f"image\n{root}/data/IM/img_000.tif\n", encoding="utf-8")


def _judge(result: Result, before: dict, after: dict, outputs: list[Path], args: list[str]) -> None:
    context = f"{args}\n{result}"
    assert ended_cleanly(result), context
    # Nothing outside the output paths changes, whatever the outcome.
    assert changes(before, after, allowed=outputs) == [], context
    if result.code == 0:
        return
    # Refused: what was there is kept; nothing is written but the predictions of the inputs
    # that could be predicted (an empty folder the command made is tolerated).
    for change in changes(before, after):
        what, path = change.split(": ", 1)
        assert what == "added", context
        if args[0] != "predict" and after[path][0] != "dir":
            raise AssertionError(f"a refused command wrote {path}\n{context}")


@hsettings(max_examples=examples(25))
@given(command_lines())
def test_random_command_lines(nuclei_data: Path, trained_run: Path, args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _example_folder(root, nuclei_data, trained_run)
        real, outputs = _materialise(args, root)
        watched = (root, nuclei_data, trained_run)
        before = snapshot(*watched)
        result = invoke(*real, cwd=root)
        _judge(result, before, snapshot(*watched), outputs, real)


def test_the_help_of_every_command_ends_cleanly() -> None:
    for command in ("", "check", "train", "predict", "evaluate", "demo", "list-plugins"):
        result = invoke(*([command] if command else []), "--help")
        assert result.code == 0 and "Traceback" not in result.err, result
    assert invoke("--version").code == 0
