"""Fuzz the discovery commands (presets, options, schema), postprocess and predict --split as
test_fuzz_cli does the others: every run ends with exit 0, or exit 2 and one message; nothing
outside the output paths changes; a refused command writes nothing."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hostile_helpers import examples, invoke, snapshot
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from test_fuzz_cli import INPUTS, OUTPUTS, SETS, _example_folder, _judge, _materialise

STEPS = [
    'model.heads.seg.postprocess=[{name = "sigmoid"}, {name = "threshold", value = 0.2}]',
    'model.heads.seg.postprocess=[{name = "sigmoid"}, {name = "connected_components"}]',
    "model.heads.seg.postprocess=[]",
    'model.heads.seg.postprocess=[{name = "nope"}]',
    'model.heads.seg.postprocess=[{name = "threshold"}]',
    "predict.block_size=[16, 16]",
    "predict.block_size=[0, 16]",
]
NAMES = ["segmentation-2d", "instance-3d", "nope", "", "@file", "@preset"]
SECTIONS = ["train", "model.heads.seg.loss", "data.layout", "model.heads", "nope", "", "."]


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(["postprocess", "presets", "options", "schema", "predict"]))
    args = [command]

    def maybe(option: str, pool: list[str], chance: bool = True) -> None:
        if draw(st.booleans()) if chance else True:
            args.extend([option, draw(st.sampled_from(pool))])

    if command == "postprocess":
        args.append(
            draw(st.sampled_from(["@run", "@run/checkpoints/last.pt", "@missing", "@file"]))
        )
        maybe("-i", ["@probs", "@probs/img_seg.tif", *INPUTS], chance=draw(st.integers(0, 5)) > 0)
        maybe("-o", OUTPUTS, chance=draw(st.integers(0, 5)) > 0)
        maybe("--head", ["seg", "nope", ""])
        maybe("--format", ["tiff", "ome-zarr", "png"])
        for _ in range(draw(st.integers(0, 2))):
            args.extend(["--set", draw(st.sampled_from([*STEPS, *SETS]))])
        if draw(st.booleans()):
            args.append("--overwrite")
    elif command == "presets":
        if draw(st.booleans()):
            args += ["show", draw(st.sampled_from(NAMES))]
            maybe("--set", SETS)
            if draw(st.booleans()):
                args.append("--as-written")
        elif draw(st.booleans()):
            args.append("--json")
    elif command == "options":
        if draw(st.booleans()):
            args.append(draw(st.sampled_from(SECTIONS)))
        if draw(st.booleans()):
            args.append("--json")
    elif command == "schema":
        maybe("-o", [*OUTPUTS, "@out/schema.json"])
    else:
        args += ["@run", "-i", "@split.csv", "-o", draw(st.sampled_from(OUTPUTS))]
        maybe("--split", ["test", "val", "train", "all", "nope", ""], chance=True)
    return args


def _probabilities(root: Path) -> None:
    """Saved head output with its predictions.csv, as predict writes it."""
    from bioim2im.io.tiff import write_tiff

    probs = root / "probs"
    probs.mkdir()
    values = np.random.default_rng(0).random((1, 40, 36), dtype=np.float32)
    write_tiff(probs / "img_seg.tif", values, axes="CYX")
    steps = json.dumps([{"name": "sigmoid"}])
    (probs / "predictions.csv").write_text(
        f"input,head,output,axes,shape,dtype,postprocess\nimg.tif,seg,img_seg.tif,CYX,1x40x36,"
        f'float32,"{steps.replace(chr(34), chr(34) * 2)}"\n',
        encoding="utf-8",
    )
    (root / "split.csv").write_text(
        f"IM,split\n{root}/data/IM/img_000.tif,test\n{root}/data/IM/img_001.tif,train\n",
        encoding="utf-8",
    )


@hsettings(max_examples=examples(10))
@given(command_lines())
def test_random_command_lines_of_discovery_postprocess_and_split(
    nuclei_data: Path, trained_run: Path, args: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _example_folder(root, nuclei_data, trained_run)
        _probabilities(root)
        real, outputs = _materialise(args, root)
        # Like predict, postprocess makes the output folder, with its parents.
        made = [p for o in outputs for p in o.parents if p.is_relative_to(root) and not p.exists()]
        watched = (root, nuclei_data, trained_run)
        before = snapshot(*watched)
        result = invoke(*real, cwd=root)
        allowed = outputs + (made if real[0] in ("predict", "postprocess") else [])
        _judge(result, before, snapshot(*watched), allowed, real)


def test_the_help_of_the_discovery_and_postprocess_commands_ends_cleanly() -> None:
    for command in (["postprocess"], ["presets"], ["presets", "show"], ["options"], ["schema"]):
        result = invoke(*command, "--help")
        assert result.code == 0 and "Traceback" not in result.err, result
