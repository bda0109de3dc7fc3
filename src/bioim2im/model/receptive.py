"""Does a network's output depend on the window it runs in, beyond its receptive field?

A network of convolutions, pooling, upsampling and batch normalisation (with its running
statistics, in eval mode) gives a voxel the same value in any window that holds the voxel's
receptive field and starts on a multiple of the network's divisor: its output is then
*window-independent*, and a tiled prediction that drops each window's border (the *halo*)
equals a whole-image one, whoever tiles (bioim2im, bioimageio.core, deepImageJ). Instance,
group or layer normalisation over the window, or attention across it, make every voxel depend
on the whole window: no halo is enough.

:func:`window_halo` finds out by running the network: its receptive field along each axis from
the gradient of one output voxel (on a copy whose weights are all positive, so that no path
cancels), then, with its own weights, that changing the input beyond that radius changes no
output, and that shifting the input by the divisor shifts the output.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

FIRST_LENGTH = 128
LONGEST = 1024
"""Longest axis tried for the receptive field; a network reaching further counts as
window-dependent."""
TOLERANCE = 1e-5
"""Largest change (relative to the output's scale) that counts as no change."""


def window_halo(
    network: nn.Module,
    *,
    in_channels: int,
    spatial_dims: int,
    divisor: int,
    scales: Mapping[str, Sequence[int]] | None = None,
    dropped: Mapping[str, Sequence[int]] | None = None,
) -> tuple[int, ...] | None:
    """Per spatial axis, the halo (input voxels, a multiple of ``divisor``) beyond which the
    network's output does not depend on the window, or None when it depends on the whole
    window (or reaches beyond :data:`LONGEST` voxels).

    ``network`` maps ``(B, in_channels, *spatial)`` to a dict head -> ``(B, C, *kept axes)``
    (or one tensor); ``scales`` gives a head's output voxels per input voxel along each axis
    (default 1) and ``dropped`` the axes a head projects away (not probed along them).
    """
    was_training = network.training
    network.eval()
    try:
        device = next(network.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    probe = _Probe(
        network, in_channels, spatial_dims, divisor, dict(scales or {}), dict(dropped or {}), device
    )
    try:
        halo = []
        for axis in range(spatial_dims):
            radius = probe.axis_halo(axis)
            if radius is None:
                return None
            halo.append(radius)
        return tuple(halo)
    finally:
        network.train(was_training)


def _multiple(n: int, divisor: int) -> int:
    return -(-n // divisor) * divisor


def _outputs(network: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    found = network(batch)
    return {"": found} if isinstance(found, torch.Tensor) else dict(found)


@dataclass(frozen=True)
class _Probe:
    """The network probed and what its inputs and outputs look like."""

    network: nn.Module
    in_channels: int
    dims: int
    divisor: int
    scales: Mapping[str, Sequence[int]]
    """Per head, output voxels per input voxel along each axis (default 1)."""
    dropped: Mapping[str, Sequence[int]]
    """Per head, the axes it projects away."""
    device: torch.device

    def axis_halo(self, axis: int) -> int | None:
        length = _multiple(FIRST_LENGTH, self.divisor)
        while length <= LONGEST:
            radius = self.receptive_radius(axis, length)
            if radius is None:  # nothing kept along this axis: no halo needed there
                return 0
            if radius < length // 2 - self.divisor:
                local = self.local(axis, length, radius)
                return _multiple(radius, self.divisor) if local else None
            length *= 2
        return None

    def shape(self, axis: int, length: int) -> tuple[int, ...]:
        """An input's spatial shape: ``length`` along ``axis``, a divisor along the others."""
        return tuple(length if a == axis else self.divisor for a in range(self.dims))

    def along(
        self, outputs: Mapping[str, torch.Tensor], axis: int
    ) -> Iterator[tuple[str, torch.Tensor, int, int]]:
        """Per head that keeps ``axis``: (head, output, the axis's dimension in the output,
        output voxels per input voxel along it)."""
        for head, output in outputs.items():
            gone = set(self.dropped.get(head, ()))
            if axis in gone:
                continue
            position = sum(1 for a in range(axis) if a not in gone)
            factors = self.scales.get(head)
            scale = int(factors[axis]) if factors is not None else 1
            yield head, output, 2 + position, scale

    def receptive_radius(self, axis: int, length: int) -> int | None:
        """How far along ``axis`` the input reaches the output voxels at the centre (a
        divisor's worth of them: each phase of the network's strides reaches its own way): the
        gradient's support on a positive copy of the network (every path adds, none cancels).
        None when no head keeps the axis."""
        positive = _positive_copy(self.network).to(self.device)
        centre, divisor = length // 2, self.divisor
        image = torch.ones((1, self.in_channels, *self.shape(axis, length)), device=self.device)
        image = image.double().requires_grad_(True)
        total: torch.Tensor | None = None
        for _, output, dim, scale in self.along(_outputs(positive, image), axis):
            picked = output.narrow(dim, centre * scale, divisor * scale).sum()
            total = picked if total is None else total + picked
        if total is None:
            return None
        (gradient,) = torch.autograd.grad(total, image)
        other = [d for d in range(gradient.ndim) if d != 2 + axis]
        reach = gradient.abs().sum(dim=other).nonzero().flatten()
        if reach.numel() == 0:
            return 0
        return int(max(centre - int(reach.min()), int(reach.max()) - (centre + divisor - 1)))

    def local(self, axis: int, length: int, radius: int) -> bool:
        """With its own weights: a change of the input at the centre changes no output further
        than ``radius`` from it, and shifting the input by the divisor shifts the output."""
        divisor = self.divisor
        generator = torch.Generator().manual_seed(0)
        shape = self.shape(axis, length + divisor)
        image = torch.randn((1, self.in_channels, *shape), generator=generator).to(self.device)
        centre = length // 2
        changed = image.clone()
        changed.narrow(2 + axis, centre, 1).add_(1.0)
        with torch.no_grad():
            before = _outputs(self.network, image.narrow(2 + axis, 0, length))
            after = _outputs(self.network, changed.narrow(2 + axis, 0, length))
            shifted = _outputs(self.network, image.narrow(2 + axis, divisor, length))
        for head, output, dim, scale in self.along(before, axis):
            level = float(output.abs().max()) + 1.0
            far = _outside(centre, radius, length, scale)
            difference = (after[head] - output).abs()
            if any(float(difference.narrow(dim, lo, hi - lo).max()) > TOLERANCE * level
                   for lo, hi in far):  # fmt: skip
                return False
            # The same voxels, from a window starting one divisor later.
            lo, hi = (divisor + radius) * scale, (length - radius) * scale
            if hi - lo > 0:
                ours = output.narrow(dim, lo, hi - lo)
                theirs = shifted[head].narrow(dim, lo - divisor * scale, hi - lo)
                if float((ours - theirs).abs().max()) > TOLERANCE * level:
                    return False
        return True


def _positive_copy(network: nn.Module) -> nn.Module:
    """``network`` in float64 with every weight positive and of the order of 1 / fan-in, no
    biases, and normalisation layers' statistics 0 and 1."""
    positive = copy.deepcopy(network).double().eval()
    with torch.no_grad():
        for module in positive.modules():
            for name, parameter in module.named_parameters(recurse=False):
                if parameter.ndim >= 2:
                    fan = max(1, parameter[0].numel())
                    parameter.fill_(1.0 / fan)
                elif name == "bias":
                    parameter.zero_()
                else:
                    parameter.fill_(1.0)
            for name, buffer in module.named_buffers(recurse=False):
                if name == "running_mean":
                    buffer.zero_()
                elif name == "running_var":
                    buffer.fill_(1.0)
    return positive


def _outside(centre: int, radius: int, length: int, scale: int) -> list[tuple[int, int]]:
    """Output ranges further than ``radius`` input voxels from ``centre`` (at ``scale``)."""
    ranges = [
        (0, max(0, (centre - radius) * scale)),
        ((centre + radius + 1) * scale, length * scale),
    ]
    return [(lo, hi) for lo, hi in ranges if hi > lo]


def halo_of(
    network: Any,
    *,
    in_channels: int,
    spatial_dims: int,
    divisor: int,
    scales: Mapping[str, Sequence[int]],
    dropped: Mapping[str, Sequence[int]],
    fixed_size: bool,
) -> tuple[int, ...] | None:
    """:func:`window_halo` of a torch network; None for anything else (a converted graph) or a
    network that takes one input size."""
    if fixed_size or not isinstance(network, nn.Module):
        return None
    try:
        return window_halo(
            network,
            in_channels=in_channels,
            spatial_dims=spatial_dims,
            divisor=divisor,
            scales=scales,
            dropped=dropped,
        )
    except (RuntimeError, ValueError):  # a network the probe's shapes do not suit
        return None
