"""Blending never changes the tensors a network returns: without TTA its outputs are blended as
they come (no copy), so a network handing back a tensor it keeps (a buffer) must find it as it
was, and the prediction must still be that tensor's values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bioim2im.prediction.blockwise.runner import predict_array


class KeepsItsOutput(nn.Module):
    """Returns the same tensor, a buffer of its own, for every batch of four 8 x 8 windows."""

    def __init__(self) -> None:
        super().__init__()
        values = torch.arange(4 * 2 * 8 * 8, dtype=torch.float32).reshape(4, 2, 8, 8) % 7 + 1
        self.register_buffer("kept", values)
        self.register_buffer("original", values.clone())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        assert len(x) == 4
        return {"seg": self.kept}


@pytest.mark.parametrize("tta", [False, [[0]]])
def test_the_tensor_a_network_returns_is_left_as_it_was(tta: bool | list[list[int]]) -> None:
    model = KeepsItsOutput().eval()
    # 4 x 4 windows of 8 x 8 at step 4 over 20 x 20: full batches of four.
    predict_array(
        model,
        np.zeros((1, 20, 20), np.float32),
        roi_size=(8, 8),
        out_channels={"seg": 2},
        overlap=0.5,
        batch_size=4,
        blend="constant",
        tta=tta,
    )
    torch.testing.assert_close(model.kept, model.original, rtol=0, atol=0)


def test_without_tta_a_constant_output_is_blended_to_itself() -> None:
    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"seg": torch.full((len(x), 3, *x.shape[2:]), 2.5)}

    result = predict_array(
        Constant().eval(),
        np.random.default_rng(0).random((1, 13, 21, 17), dtype=np.float32),
        roi_size=(8, 8, 8),
        out_channels={"seg": 3},
        overlap=0.25,
        batch_size=4,
    )["seg"]
    np.testing.assert_allclose(result, 2.5, rtol=1e-6)
