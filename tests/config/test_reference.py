"""`bioim2im options` documents every preset key; `bioim2im schema` is a JSON Schema of preset
files that editors use: every shipped preset passes it, mistakes do not."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bioim2im.config.reference import preset_options
from bioim2im.config.schema import Preset
from bioim2im.plugin.hookspecs import WITHOUT_PARAMETERS
from bioim2im.plugin.registry import argument_docs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "presets").glob("*.toml"))


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Draft202012Validator:
    from bioim2im.cli import main

    path = tmp_path_factory.mktemp("schema") / "bioim2im-preset.schema.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["bioim2im", "schema", "--output", str(path)])
        with pytest.raises(SystemExit) as exit_info:
            main()
    assert exit_info.value.code in (0, None)
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _errors(validator: Draft202012Validator, preset: dict[str, Any]) -> list[str]:
    return [error.message for error in validator.iter_errors(preset)]


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_shipped_preset_passes_the_schema(validator, path: Path) -> None:
    assert _errors(validator, tomllib.loads(path.read_text())) == []


@pytest.mark.parametrize(
    ("mistake", "words"),
    [
        ({"data": {"patch_sise": [64, 64]}}, "'patch_sise' was unexpected"),
        ({"train": {"steps": "many"}}, "'many'"),
        ({"train": {"steps": True}}, "True"),
        ({"model": {"backbone": {"name": "unet", "chanels": [8, 16]}}}, "not valid under any"),
        ({"model": {"backbone": {"name": "no-such-net"}}}, "not valid under any"),
        ({"predict": {"format": "png"}}, "'png' is not one of"),
        ({"logging": {"loggers": [{"name": "tensorboard", "log_dri": "tb"}]}}, "'log_dri'"),
    ],
)
def test_misspelt_keys_and_wrong_values_fail_the_schema(
    validator, mistake: dict[str, Any], words: str
) -> None:
    preset = {"extends": "segmentation-2d", **mistake}
    errors = _errors(validator, preset)
    assert errors and any(words in e for e in errors), errors


def test_schema_knows_component_parameters_and_descriptions(validator) -> None:
    schema = validator.schema
    from bioim2im.plugin.manager import get_registry

    unet = schema["$defs"]["Backbone_unet"]
    assert "channels" in unet["properties"]
    assert unet["description"] == get_registry().get("backbone", "unet").description
    data = schema["$defs"]["DataConfig"]["properties"]
    assert data["patch_size"]["description"].startswith("Patch size per spatial axis")
    tensorboard = schema["$defs"]["Logger_tensorboard"]["properties"]["log_dir"]
    assert tensorboard["description"] == "Folder of the event files, relative to the run directory."


def test_schema_output_that_is_a_folder_is_refused(cli, tmp_path: Path) -> None:
    result = cli("schema", "--output", tmp_path)
    assert result.code == 2
    assert "is a directory; give a file name" in result.err
    assert list(tmp_path.iterdir()) == []


def test_every_preset_key_is_listed_with_a_description() -> None:
    options = {o.key: o for o in preset_options()}
    for section in ("data", "model", "train", "predict", "logging", "adversarial"):
        assert section in options
    for key, option in options.items():
        assert option.description, f"{key} has no description"
    assert options["train.keep_checkpoints"].default == "0"
    assert options["train.keep_checkpoints"].type == "int"
    assert options["data.patch_size"].default == "required"
    assert options["predict.format"].type == '"ome-zarr" | "tiff"'
    assert options["model.heads.<name>.loss"].kind == "loss"
    # Every field of every section is there.
    assert len([k for k in options if k.startswith("train.")]) == len(
        Preset.model_fields["train"].annotation.model_fields  # type: ignore[union-attr]
    )


def test_options_of_a_section_and_of_a_component_key(cli) -> None:
    train = cli("options", "train")
    assert train.code == 0, train.err
    assert "train.keep_checkpoints: int = 0" in train.out
    assert "data.patch_size" not in train.out
    loss = json.loads(cli("options", "model.heads.seg.loss", "--json").out)
    assert [o["key"] for o in loss["options"]] == ["model.heads.<name>.loss"]
    names = {c["name"]: c for c in loss["components"]}
    assert {"dice_ce", "mse", "l1"} <= set(names)
    assert {p["key"] for p in names["dice_ce"]["params"]} >= {"sigmoid", "softmax"}
    wrong = cli("options", "trian")
    assert wrong.code == 2
    assert "no preset key 'trian'; did you mean 'train'?" in wrong.err


def test_list_plugins_params_shows_types_defaults_and_descriptions(cli) -> None:
    result = cli("list-plugins", "--kind", "logger", "--params", "--json")
    assert result.code == 0, result.err
    (tensorboard,) = [c for c in json.loads(result.out) if c["name"] == "tensorboard"]
    assert tensorboard["params"][0] == {
        "key": "log_dir",
        "type": "text",
        "default": '"tensorboard"',
        "description": "Folder of the event files, relative to the run directory.",
        "kind": None,
    }
    text = cli("list-plugins", "--kind", "postprocessor", "--params")
    assert "threshold: float = 0.5" in text.out


def test_argument_docs_reads_google_style_args() -> None:
    doc = """Do it.

    Args:
        value: The value
            over two lines.
        other (int): Another.

    Returns:
        nothing: not a parameter.
    """
    import inspect

    assert argument_docs(inspect.cleandoc(doc)) == {
        "value": "The value over two lines.",
        "other": "Another.",
    }


def test_every_built_in_component_parameter_is_described() -> None:
    from bioim2im.plugin.manager import get_registry

    undocumented = [
        f"{c.kind} {c.name}: {name}"
        for c in get_registry()
        if c.package == "bioim2im" and c.kind not in WITHOUT_PARAMETERS
        for name, field in c.params.model_fields.items()
        if not field.description
    ]
    assert undocumented == []
