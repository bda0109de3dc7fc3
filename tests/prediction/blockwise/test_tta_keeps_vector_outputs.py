"""Test-time augmentation flips the input, runs the model and flips each output back; an output
channel that is the component of a vector along a flipped axis (an EmbedSeg offset, a flow) must
also change sign, or the average mixes vectors pointing opposite ways."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bioim2im.prediction.blockwise.blocks import HeadGeometry
from bioim2im.prediction.blockwise.runner import predict_array

RNG = np.random.default_rng(11)


def gradient(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Central difference of (B, 1, *spatial) along spatial ``axis`` (zero padding): flipping
    the input along that axis flips the result and negates it."""
    ndim = x.ndim - 2
    shape = [1, 1] + [3 if a == axis else 1 for a in range(ndim)]
    kernel = torch.tensor([-0.5, 0.0, 0.5], dtype=x.dtype).view(shape)
    conv = F.conv3d if ndim == 3 else F.conv2d
    padding = tuple(1 if a == axis else 0 for a in range(ndim))
    return conv(x, kernel, padding=padding)


class Offsets(nn.Module):
    """A flip-equivariant stand-in for an EmbedSeg model: the image's gradient (one component
    per axis, in axis order), its square (not a vector), and the same with the first axis
    dropped (mean over it) and upsampled twice."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        ndim = x.ndim - 2
        vectors = torch.cat([gradient(x, a) for a in range(ndim)] + [x * x], dim=1)
        projected = vectors.mean(dim=2)
        upsampled = vectors
        for a in range(ndim):
            upsampled = upsampled.repeat_interleave(2, dim=2 + a)
        return {"same": vectors, "projected": projected, "upsampled": upsampled}


def geometries(ndim: int) -> tuple[dict[str, int], dict[str, HeadGeometry]]:
    directions = tuple((a, a) for a in range(ndim))
    return {"same": ndim + 1, "projected": ndim + 1, "upsampled": ndim + 1}, {
        "same": HeadGeometry(scale=(1,) * ndim, directions=directions),
        "projected": HeadGeometry(scale=(1,) * ndim, dropped_axes=(0,), directions=directions),
        "upsampled": HeadGeometry(scale=(2,) * ndim, directions=directions),
    }


@pytest.mark.parametrize("ndim", [2, 3])
def test_tta_of_vector_outputs_equals_the_plain_prediction(ndim: int) -> None:
    shape = (30, 26) if ndim == 2 else (10, 20, 18)
    image = RNG.random((1, *shape), dtype=np.float32)
    out_channels, heads = geometries(ndim)
    options = dict(
        roi_size=(16, 16) if ndim == 2 else (10, 12, 12),
        out_channels=out_channels,
        head_geometry=heads,
        blend="constant",
    )
    plain = predict_array(Offsets(), image, **options)
    for tta in (True, [[ndim - 1]], [[0, ndim - 1]]):
        augmented = predict_array(Offsets(), image, tta=tta, **options)
        for head in out_channels:
            # The offsets are not all zero, so a sign error would show.
            assert np.abs(plain[head][:ndim]).max() > 0.1
            np.testing.assert_allclose(
                augmented[head], plain[head], atol=1e-5, err_msg=f"{head}, tta={tta}"
            )


def test_channels_that_are_not_vectors_keep_their_sign() -> None:
    # Declared as a vector along the first axis only: the second component, being undeclared,
    # averages with its mirrored (negated) self when the second axis is flipped.
    image = RNG.random((1, 16, 16), dtype=np.float32)
    geometry = HeadGeometry(scale=(1, 1), directions=((0, 0),))
    out = predict_array(
        Offsets(),
        image,
        roi_size=(16, 16),
        out_channels={"same": 3, "projected": 3, "upsampled": 3},
        head_geometry={
            "same": geometry,
            "projected": HeadGeometry(scale=(1, 1), dropped_axes=(0,)),
            "upsampled": HeadGeometry(scale=(2, 2)),
        },
        tta=[[1]],
    )["same"]
    plain = Offsets()(torch.from_numpy(image)[None])["same"][0].numpy()
    np.testing.assert_allclose(out[0], plain[0], atol=1e-5)
    np.testing.assert_allclose(out[2], plain[2], atol=1e-5)
    np.testing.assert_allclose(out[1], 0.0, atol=1e-5)


def test_directions_must_name_existing_channels_and_axes() -> None:
    with pytest.raises(ValueError, match=r"axes 0\.\.1"):
        HeadGeometry(scale=(1, 1), directions=((0, 2),))
    with pytest.raises(ValueError, match="two axes"):
        HeadGeometry(scale=(1, 1), directions=((0, 0), (0, 1)))
    with pytest.raises(ValueError, match="channels \\[5\\]"):
        predict_array(
            nn.Identity(),
            np.zeros((1, 8, 8), np.float32),
            roi_size=(8, 8),
            out_channels={"y": 1},
            head_geometry={"y": HeadGeometry(scale=(1, 1), directions=((5, 0),))},
        )
