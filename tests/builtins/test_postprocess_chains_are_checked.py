"""`bioim2im check` follows each head's postprocessing chain with what every step declares it
takes and gives (channels; real values, probabilities, masks or labels), and refuses a step
given maps it cannot take, naming its key, its value and what is valid; before anything runs."""

from __future__ import annotations

import pytest

CHAIN = "model.heads.{head}.postprocess={steps}"
REFUSED = {
    "fill_holes on probabilities": (
        "segmentation-2d",
        ["model.heads.seg.postprocess=[{name='sigmoid'}, {name='fill_holes'}]"],
        ['model.heads.seg.postprocess[1] = {name = "fill_holes"}', "probabilities",
         "takes a 0/1 mask or integer labels", "put a threshold before it"],
    ),
    "fill_holes on logits": (
        "segmentation-2d",
        ["model.heads.seg.postprocess=[{name='fill_holes'}]"],
        ["model.heads.seg.postprocess[0]", "real values", "0/1 mask or integer labels"],
    ),
    "size filter on probabilities": (
        "segmentation-2d",
        ["model.heads.seg.postprocess=[{name='sigmoid'}, {name='size_filter', min_size=4}]"],
        ['postprocess[1] = {name = "size_filter", min_size = 4}', "0/1 mask or integer labels"],
    ),
    "components of probabilities": (
        "segmentation-2d",
        ["model.heads.seg.postprocess=[{name='sigmoid'}, {name='connected_components'}]"],
        ["postprocess[1]", "connected_components takes a 0/1 mask or integer labels"],
    ),
    "watershed fg_channel past the channels": (
        "segmentation-2d",
        ["model.heads.seg.postprocess=[{name='sigmoid'}, {name='watershed', fg_channel=5}]"],
        ['postprocess[1] = {name = "watershed", fg_channel = 5}', "in 1 channel",
         "fg_channel = 5 is not one of its channels (valid: 0)"],
    ),
    "watershed seed_channel past the channels": (
        "segmentation-2d",
        ["model.heads.seg.out_channels=2",
         "model.heads.seg.postprocess=[{name='sigmoid'}, {name='watershed', mode='boundary', seed_channel=3}]"],
        ["postprocess[1]", "seed_channel = 3", "valid: 0 to 1"],
    ),
    "embedseg_cluster on one channel": (
        "segmentation-2d",
        ["model.heads.seg.postprocess=[{name='embedseg_cluster'}]"],
        ['postprocess[0] = {name = "embedseg_cluster"}', "in 1 channel",
         "5 channels of real values in 2D"],
    ),
    "embedseg_cluster after a sigmoid": (
        "embedseg-2d",
        ["model.heads.seg.postprocess=[{name='sigmoid'}, {name='embedseg_cluster'}]"],
        ["postprocess[1]", "probabilities in 5 channels", "with no step before it"],
    ),
    "embedseg_cluster on a projection counts its 2D output": (
        "multitask-3d",
        ["model.heads.mip.out_channels=7", "model.heads.mip.postprocess=[{name='embedseg_cluster'}]"],
        ["model.heads.mip.postprocess[0]", "5 channels of real values in 2D"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_step_given_maps_it_cannot_take_is_refused_by_check(case: str, cli) -> None:
    preset, overrides, mentions = REFUSED[case]
    result = cli("check", preset, *(a for text in overrides for a in ("--set", text)))
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert sum(line.startswith("error:") for line in result.err.splitlines()) == 1, result.err
    for mention in mentions:
        assert mention in result.err, (mention, result.err)


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [
        ("segmentation-2d", ["model.heads.seg.postprocess=[{name='sigmoid'}, {name='threshold'}, "
                             "{name='connected_components'}, {name='fill_holes'}, "
                             "{name='size_filter', min_size=3}]"]),
        ("segmentation-2d", ["model.heads.seg.postprocess=[{name='threshold', value=0}, "
                             "{name='watershed'}, {name='remove_small_objects'}]"]),
        ("segmentation-2d", ["model.heads.seg.out_channels=3",
                             "model.heads.seg.postprocess=[{name='softmax'}, {name='argmax'}, "
                             "{name='fill_holes'}]"]),
        ("multitask-3d", ["model.heads.mip.out_channels=5",
                          "model.heads.mip.postprocess=[{name='embedseg_cluster'}]"]),
        ("embedseg-2d", []),
        ("instance-3d", []),
    ],
)  # fmt: skip
def test_chains_that_fit_are_accepted(preset: str, overrides: list[str], cli) -> None:
    result = cli("check", preset, *(a for text in overrides for a in ("--set", text)))
    assert result.code == 0, result.err


def test_every_built_in_postprocessor_declares_what_it_takes() -> None:
    from bioim2im.plugin.hookspecs import Values
    from bioim2im.plugin.manager import get_registry

    registry = get_registry()
    for name in registry.names("postprocessor"):
        component = registry.get("postprocessor", name)
        if component.package != "bioim2im":
            continue
        values = component.extras.get("values")
        assert callable(values), name
        params = component.params.model_validate({}).model_dump()
        try:
            given = values(Values(5, "float"), spatial_dims=2, **params)
        except ValueError:
            given = values(Values(5, "mask"), spatial_dims=2, **params)
        assert isinstance(given, Values) and given.channels >= 1, name
