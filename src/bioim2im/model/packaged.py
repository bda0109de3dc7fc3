"""The network as it leaves bioim2im: one input, its heads' outputs in a fixed order.

TorchScript, ONNX and bioimage.io consumers call a network with one image and read its outputs
by position, not from a dict; :class:`HeadsInOrder` gives them that. :class:`PackagedNetwork` is
the architecture a bioimage.io package names for its ``pytorch_state_dict`` weights: its keyword
arguments (the training patch size and a preset's ``[model]`` section, plain values) rebuild the
network from the registered components, so a package needs bioim2im (and the plugins whose
components it uses) but no code of its own. Those values go through the preset's validation
like any preset: they can only name registered components.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from bioim2im.errors import UserError
from bioim2im.model.network import Im2ImModel, build_model


def select_heads(network: Im2ImModel, heads: Sequence[str]) -> Im2ImModel:
    """The backbone with only ``heads`` (the others' weights left out), sharing the modules."""
    unknown = [h for h in heads if h not in network.heads]
    if unknown:
        raise UserError(
            f"unknown head {', '.join(map(repr, unknown))}; the model's heads: "
            f"{', '.join(network.heads)}"
        )
    return Im2ImModel(network.backbone, {h: network.heads[h] for h in heads})


class HeadsInOrder(nn.Module):
    """``forward(image)`` returns the heads' outputs in ``heads`` order: a tuple, or the tensor
    itself when there is one head."""

    def __init__(self, network: Im2ImModel, heads: Sequence[str] | None = None) -> None:
        super().__init__()
        chosen = list(heads if heads is not None else network.heads)
        self.network = select_heads(network, chosen)
        self.head_names = chosen

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = self.network(image)
        if len(self.head_names) == 1:
            return outputs[self.head_names[0]]
        return tuple(outputs[name] for name in self.head_names)


class PackagedNetwork(HeadsInOrder):
    """The network of a preset's ``[model]`` section (``model``, as plain values) trained on
    patches of ``patch_size``, with the heads that section lists, in its order."""

    def __init__(self, patch_size: Sequence[int], model: Mapping[str, Any]) -> None:
        super().__init__(build_network(patch_size, model))


def build_network(patch_size: Sequence[int], model: Mapping[str, Any]) -> Im2ImModel:
    """The network described by a ``[model]`` section, validated as in a preset."""
    from bioim2im.config.loading import validate
    from bioim2im.plugin.manager import get_registry

    if not isinstance(model, Mapping):
        raise UserError(f"a packaged network needs a [model] table, got {type(model).__name__}")
    registry = get_registry()
    data = {"data": {"patch_size": list(patch_size)}, "model": dict(model)}
    preset = validate(data, registry, "the packaged network's [model] section")
    return build_model(preset, registry)


def network_arguments(
    patch_size: Sequence[int], model_section: Mapping[str, Any], heads: Sequence[str]
) -> dict[str, Any]:
    """The keyword arguments of :class:`PackagedNetwork` for ``heads`` of a model section (the
    preset's ``model`` table as plain values)."""
    section = dict(model_section)
    section["heads"] = {name: model_section["heads"][name] for name in heads}
    return {"patch_size": list(patch_size), "model": section}
