"""`bioim2im postprocess` refuses, before reading or writing anything, a chain whose steps would
get maps they cannot take (fill_holes on probabilities, a watershed channel the head does not
have, EmbedSeg clustering of one channel): exit 2, one message naming the step's key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bioim2im.data.synthetic import nuclei
from bioim2im.io.tiff import write_tiff
from bioim2im.prediction.job import predict_files

CHAINS = {
    "fill_holes on probabilities": (
        '[{name = "sigmoid"}, {name = "fill_holes"}]',
        "model.heads.prob.postprocess[1]",
    ),
    "watershed fg_channel 5": (
        '[{name = "sigmoid"}, {name = "watershed", fg_channel = 5}]',
        "fg_channel = 5 is not one of its channels",
    ),
    "embedseg_cluster of one channel": (
        '[{name = "embedseg_cluster"}]',
        "model.heads.prob.postprocess[0]",
    ),
}


@pytest.fixture
def saved(run_2d: Path, tmp_path: Path) -> Path:
    """Probabilities saved by predict (head prob: [sigmoid])."""
    image, _ = nuclei((48, 40), seed=5, radius=(4.0, 7.0))
    write_tiff(tmp_path / "cells.tif", image, axes="YX")
    predict_files(run_2d, tmp_path / "cells.tif", tmp_path / "probs", progress=False)
    return tmp_path / "probs"


@pytest.mark.parametrize("case", CHAINS, ids=list(CHAINS))
def test_postprocess_refuses_a_chain_its_steps_cannot_take(case, cli, run_2d, saved, tmp_path):
    chain, mention = CHAINS[case]
    out = tmp_path / "out"
    result = cli(
        "postprocess", run_2d, "-i", saved, "-o", out, "--head", "prob",
        "--set", f"model.heads.prob.postprocess={chain}",
    )  # fmt: skip
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert sum(line.startswith("error:") for line in result.err.splitlines()) == 1, result.err
    assert mention in result.err, result.err
    assert not out.exists()
