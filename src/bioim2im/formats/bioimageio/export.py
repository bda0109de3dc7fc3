"""A bioimage.io model package (model format 0.5) of a run: a zip, or a folder.

The package holds the weights in three formats (``pytorch_state_dict`` with the architecture
importable from bioim2im, and ``torchscript`` and ``onnx`` converted from it), a test input cut
from an image of the run's data with the outputs the package's own pipeline gives for it, a
cover, a README and the resolved preset. The description is built and validated with
``bioimageio.spec``; the package is written under a hidden name, tested with
``bioimageio.core``'s model test (every weights format), and only then renamed into place.
Everything runs offline: the test's network checks (URLs, GitHub users) are skipped and the
README says so.
"""

from __future__ import annotations

import getpass
import io
import itertools
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bioim2im._version import __version__
from bioim2im.errors import UserError
from bioim2im.formats.bioimageio.layout import Layout, OutputLayout, plan_layout
from bioim2im.formats.export.source import Source, TestImage, test_image
from bioim2im.formats.export.target import scratch

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.plugin.registry import ComponentRegistry

SMALLEST_VALUE = 1e-4
"""bioimage.io refuses test tensors whose values all lie within this of 0."""
BINARY_MISMATCH_PPM = 1000
"""Elements per million of a 0/1 output allowed to differ between weights formats: a
probability within float rounding of the threshold may land on either side."""
MAX_CROPS = 27
"""Crops of the test image tried for test tensors (a 3 x 3 x 3 grid)."""
MONAI = {
    "text": "Cardoso et al., MONAI: An open-source framework for deep learning in healthcare, 2022",
    "doi": "10.48550/arXiv.2211.02701",
}
"""The default citation: the networks are MONAI's."""


def export_package(
    source: Source, output: Path, *, folder: bool, image: Path | None, partial: Path
) -> list[str]:
    """Write the package of ``source`` at ``partial`` (tested); returns the checks passed."""
    import torch

    from bioim2im.formats.bioimageio.documents import cover, readme
    from bioim2im.formats.graphs.conversion import (
        disagreement,
        load_torchscript,
        to_onnx,
        to_torchscript,
        torchscript_bytes,
    )
    from bioim2im.formats.graphs.runtimes import NamedOutputs, OnnxRuntimeNetwork
    from bioim2im.model.packaged import HeadsInOrder, network_arguments

    bioimageio = _bioimageio()
    bioimageio.check_license(source.model.preset.export.license)
    layout = plan_layout(source)
    network = HeadsInOrder(source.model.network, source.heads).eval()
    found = test_image(source, image)
    test_input, test_outputs = _test_tensors(source, layout, network, found)
    preset = source.model.preset
    metadata = preset.export
    name = _name(metadata.name or f"bioim2im {source.name}")
    description = metadata.description or _description(source)
    in_channels = source.model.in_channels
    example = torch.from_numpy(test_input)
    with scratch(output) as root:
        torch.save(network.state_dict(), root / "weights.pt")
        scripted = torchscript_bytes(to_torchscript(network, example), None)
        (root / "weights_torchscript.pt").write_bytes(scripted)
        graph = to_onnx(network, example, [o.tensor for o in layout.outputs])
        (root / "weights.onnx").write_bytes(graph)
        sizes = source.test_sizes()
        converted = {
            "torchscript": NamedOutputs(load_torchscript(scripted, trusted=True)[0], source.heads),
            "onnx": OnnxRuntimeNetwork(graph, source.heads),
        }
        for format, runner in converted.items():
            problem = disagreement(network, _in_order(runner, source.heads), sizes, in_channels)
            if problem is not None:
                raise UserError(f"the {format} conversion disagrees with the network: {problem}")
        np.save(root / "test_input.npy", test_input)
        for described in layout.outputs:
            np.save(root / f"test_output_{described.tensor}.npy", test_outputs[described.tensor])
        first = layout.outputs[0]
        cover(test_input[0], test_outputs[first.tensor][0].astype(np.float32), root / "cover.png")
        (root / "preset.toml").write_text(_preset_toml(source), encoding="utf-8")
        if standalone(source) is not None:
            from bioim2im.formats.bioimageio.standalone_network_file import text

            (root / ARCHITECTURE_FILE).write_bytes(text())
            torch_version = torch.__version__.split("+")[0]
            (root / ENVIRONMENT_FILE).write_text(environment(torch_version), encoding="utf-8")
        weights = ["pytorch_state_dict", "torchscript", "onnx"]
        (root / "README.md").write_text(
            readme(
                source,
                layout,
                name=name,
                description=description,
                weights=weights,
                core_version=bioimageio.core_version,
                standalone=standalone(source) is not None,
            ),
            encoding="utf-8",
        )
        model_section = _model_section(source)
        rdf = _description_table(
            source,
            layout,
            name=name,
            description=description,
            architecture=network_arguments(
                source.model.preset.data.patch_size, model_section, source.heads
            ),
        )
        urls = [c["url"] for c in rdf["cite"] if c.get("url")]
        descr = bioimageio.build(rdf, root, urls)
        bioimageio.save(descr, partial, folder=folder)
    target = partial / "rdf.yaml" if folder else partial
    bioimageio.test(target, urls)
    return [f"bioimageio.core {bioimageio.core_version} model test ({', '.join(weights)})"]


def _in_order(runner: Any, heads: Sequence[str]) -> Any:
    def run(batch: Any) -> list[Any]:
        outputs = runner(batch)
        return [outputs[h] for h in heads]

    return run


# ---------------------------------------------------------------------------------------------
# Test tensors


def _test_tensors(
    source: Source, layout: Layout, network: Any, found: TestImage
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A crop of ``found`` (``(1, C, *spatial)``, as read) and the package's outputs for it:
    preprocessing with the crop's own statistics, the network, each output's postprocessing,
    as bioimage.io's tools compute them. The first crop (the centre, then a grid) whose
    tensors all hold values the specification can test is taken."""
    import torch

    from bioim2im.formats.bioimageio.operations import Preprocessing, postprocessing_steps

    patch = source.model.preset.data.patch_size
    shape = found.spatial_shape
    size = [
        layout.valid_size(a, min(p, n)) for a, (p, n) in enumerate(zip(patch, shape, strict=True))
    ]
    preprocess = Preprocessing(layout.preprocessing, layout.input_axis_ids)
    steps = {o.tensor: postprocessing_steps(o.operations, o.axis_ids) for o in layout.outputs}
    for start in itertools.islice(_crop_starts(shape, size), MAX_CROPS):
        crop = _read_crop(found, start, size)
        with torch.no_grad():
            raw = network(torch.from_numpy(preprocess(crop)[None]))
        raw = (raw,) if isinstance(raw, torch.Tensor) else raw
        outputs = {}
        for output, values in zip(layout.outputs, raw, strict=True):
            array = values[0].numpy()
            for step in steps[output.tensor]:
                array = step(array)
            outputs[output.tensor] = array[None]
        if all(_testable(a) for a in (crop, *outputs.values())):
            return crop[None], outputs
    raise UserError(
        f"{found.path}: every crop tried gives a test tensor whose values all lie within "
        f"{SMALLEST_VALUE:g} of 0 (an empty image, or a model that predicts nothing there), "
        "which bioimage.io cannot test; give another image with --test-image"
    )


def _testable(array: np.ndarray) -> bool:
    return bool(array.size) and not (array.min() > -SMALLEST_VALUE and array.max() < SMALLEST_VALUE)


def _crop_starts(shape: Sequence[int], size: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """The centre first, then the corners and edges of a 3-per-axis grid."""
    choices = []
    for n, s in zip(shape, size, strict=True):
        free = max(0, n - s)
        choices.append(list(dict.fromkeys((free // 2, 0, free))))
    centre = tuple(c[0] for c in choices)
    yield centre
    for start in itertools.product(*choices):
        if start != centre:
            yield start


def _read_crop(found: TestImage, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    region = [
        slice(s, min(s + k, n)) for s, k, n in zip(start, size, found.spatial_shape, strict=True)
    ]
    crop = found.read(region)
    missing = [(0, k - (r.stop - r.start)) for k, r in zip(size, region, strict=True)]
    if any(after for _, after in missing):  # an image smaller than the smallest size
        crop = np.pad(crop, ((0, 0), *missing), mode="symmetric")
    return np.ascontiguousarray(crop, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# The description


def _name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", text).strip()[:128]
    return name if len(name) >= 5 else f"{name} model".strip()


def _description(source: Source) -> str:
    preset = source.model.preset
    if preset.description:
        return preset.description[:1024]
    tasks = ", ".join(
        f"{h} ({preset.model.heads[h].task}, {preset.model.heads[h].out_channels} channel(s))"
        for h in source.heads
    )
    return (
        f"A {source.spatial_dims}D image-to-image model trained with bioim2im: a "
        f"{preset.model.backbone.name} backbone ({source.model.in_channels} input channel(s)) "
        f"with the heads {tasks}."
    )


def _preset_toml(source: Source) -> str:
    from bioim2im.config.loading import to_toml

    return to_toml(source.shared_preset())


def _model_section(source: Source) -> dict[str, Any]:
    return source.model.preset.model.model_dump(mode="json", exclude_none=True)


def _tags(source: Source) -> list[str]:
    preset = source.model.preset
    words = {"semantic": "semantic-segmentation", "instance": "instance-segmentation"}
    tags = ["bioim2im", "pytorch", f"{source.spatial_dims}d", preset.model.backbone.name]
    for head in source.heads:
        task = preset.model.heads[head].task
        tags.append(words.get(task, "image-to-image"))
    if preset.adversarial is not None:
        tags.append("gan")
    return list(dict.fromkeys([*tags, *preset.export.tags]))


def _description_table(
    source: Source,
    layout: Layout,
    *,
    name: str,
    description: str,
    architecture: dict[str, Any],
) -> dict[str, Any]:
    import torch

    from bioim2im.formats.graphs.conversion import ONNX_OPSET

    metadata = source.model.preset.export
    authors = [a.model_dump(exclude_none=True) for a in metadata.authors] or [{"name": _user()}]
    cite = [c.model_dump(exclude_none=True) for c in metadata.cite] or [MONAI]
    torch_version = torch.__version__.split("+")[0]
    spatial = []
    for axis_id, size in zip(layout.spatial_ids, layout.sizes, strict=True):
        value = size if isinstance(size, int) else {"min": size[0], "step": size[1]}
        spatial.append({"type": "space", "id": axis_id, "size": value})
    # A discrete output allows no difference in value, only some mismatched elements (spec
    # 0.5.14 refuses a relative or absolute tolerance on one; 0.5.12 accepts these entries).
    tolerances = [
        {
            "output_ids": [o.tensor],
            "relative_tolerance": 0,
            "absolute_tolerance": 0,
            "mismatched_elements_per_million": BINARY_MISMATCH_PPM,
        }
        for o in layout.outputs
        if o.binary
    ]
    return {
        "type": "model",
        "format_version": _bioimageio().format_version,
        "name": name,
        "description": description,
        "authors": authors,
        "cite": cite,
        "license": metadata.license,
        "tags": _tags(source),
        "documentation": {"source": "README.md"},
        "covers": [{"source": "cover.png"}],
        "attachments": [{"source": "preset.toml"}],
        "inputs": [
            {
                "id": layout.input,
                "description": "the image, as read (the preprocessing normalises it)",
                "axes": [
                    {"type": "batch"},
                    {
                        "type": "channel",
                        "channel_names": [f"channel{i}" for i in range(layout.in_channels)],
                    },
                    *spatial,
                ],
                "test_tensor": {"source": "test_input.npy"},
                "data": {"type": "float32"},
                "preprocessing": layout.preprocessing,
            }
        ],
        "outputs": [_output(layout, output) for output in layout.outputs],
        "weights": {
            "pytorch_state_dict": _state_dict_entry(source, architecture, torch_version),
            "torchscript": {
                "source": "weights_torchscript.pt",
                "pytorch_version": torch_version,
                "parent": "pytorch_state_dict",
            },
            "onnx": {
                "source": "weights.onnx",
                "opset_version": ONNX_OPSET,
                "parent": "pytorch_state_dict",
            },
        },
        "config": {
            "bioimageio": {"reproducibility_tolerance": tolerances},
            "bioim2im": {
                "version": __version__,
                "preset": "preset.toml",
                "network": architecture,
                "input": layout.input,
                "outputs": {
                    o.tensor: {"head": o.head, "expressed_steps": o.expressed}
                    for o in layout.outputs
                },
                "halo": _input_halo(layout),
            },
        },
    }


def _input_halo(layout: Layout) -> list[int]:
    """Per spatial axis of the input, the largest output halo in input voxels."""
    halo = [0] * len(layout.spatial_ids)
    for output in layout.outputs:
        for axis, scale, h in zip(output.kept_axes, output.scale, output.halo, strict=True):
            halo[axis] = max(halo[axis], -(-h // scale))
    return halo


def standalone(source: Source) -> dict[str, Any] | None:
    """The keyword arguments of the package's own architecture file for ``source``'s network
    (see :func:`standalone_arguments`), or None."""
    return standalone_arguments(source.model.preset, source.model.registry, source.heads)


def standalone_arguments(
    preset: Preset, registry: ComponentRegistry, heads: Sequence[str]
) -> dict[str, Any] | None:
    """The keyword arguments of ``Network`` in the package's own architecture file
    (:mod:`bioim2im.builtins._standalone_network`, which needs torch and MONAI only)
    for ``heads`` of ``preset``'s network, or None when the network uses a component of a
    plugin, which only bioim2im can build."""
    import json

    from bioim2im.builtins import _standalone_network as file

    model = preset.model

    def builtin(kind: str, name: str, table: dict[str, Any]) -> bool:
        return name in table and registry.get(kind, name).package == "bioim2im"

    if not builtin("backbone", model.backbone.name, file.BACKBONES):
        return None
    if not all(builtin("head", model.heads[h].name, file.HEADS) for h in heads):
        return None
    described = []
    for name in heads:
        head = model.heads[name]
        described.append(
            {"id": name, "name": head.name, "out_channels": head.out_channels, **head.params()}
        )
    arguments = {
        "spatial_dims": preset.spatial_dims,
        "in_channels": model.in_channels,
        "features": model.features,
        "backbone": {"name": model.backbone.name, **model.backbone.params()},
        "heads": described,
    }
    return dict(json.loads(json.dumps(arguments)))  # plain values: tuples become lists


ARCHITECTURE_FILE = "bioim2im_network.py"
ENVIRONMENT_FILE = "environment.yaml"


def _state_dict_entry(
    source: Source, architecture: dict[str, Any], torch_version: str
) -> dict[str, Any]:
    """The ``pytorch_state_dict`` weights: the architecture from the package's own file when
    the network is built-in components only (any consumer runs it with torch and MONAI), else
    bioim2im's :class:`~bioim2im.model.packaged.PackagedNetwork` (needs bioim2im)."""
    arguments = standalone(source)
    if arguments is None:
        return {
            "source": "weights.pt",
            "architecture": {
                "callable": "PackagedNetwork",
                "import_from": "bioim2im.model.packaged",
                "kwargs": architecture,
            },
            "pytorch_version": torch_version,
        }
    from bioim2im.formats.bioimageio.standalone_network_file import sha256

    return {
        "source": "weights.pt",
        "architecture": {
            "source": ARCHITECTURE_FILE,
            "sha256": sha256(),
            "callable": "Network",
            "kwargs": arguments,
        },
        "pytorch_version": torch_version,
        "dependencies": {"source": ENVIRONMENT_FILE},
    }


def environment(torch_version: str) -> str:
    """The conda environment the ``pytorch_state_dict`` weights run in."""
    import monai

    return (
        "name: bioim2im-network\n"
        "channels: [conda-forge, nodefaults]\n"
        "dependencies:\n"
        "  - python>=3.10\n"
        f"  - pytorch=={torch_version}\n"
        f"  - monai>={monai.__version__.split('+')[0]}\n"
    )


def _output(layout: Layout, output: OutputLayout) -> dict[str, Any]:
    axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": _channel_names(output)},
    ]
    for axis, scale, halo in zip(output.kept_axes, output.scale, output.halo, strict=True):
        axis_id = layout.spatial_ids[axis]
        entry: dict[str, Any] = {
            "type": "space",
            "id": axis_id,
            "size": {"tensor_id": layout.input, "axis_id": axis_id},
            "scale": 1.0 / scale,
        }
        if halo > 0:
            entry["halo"] = halo
        axes.append(entry)
    data: dict[str, Any] = (
        {"type": "uint8", "values": [0, 1]} if output.binary else {"type": "float32"}
    )
    return {
        "id": output.tensor,
        "description": f"head '{output.head}'",
        "axes": axes,
        "test_tensor": {"source": f"test_output_{output.tensor}.npy"},
        "data": data,
        "postprocessing": output.operations,
    }


def _channel_names(output: OutputLayout) -> list[str]:
    if output.channels == 1:
        return [output.tensor]
    return [f"{output.tensor}{i}" for i in range(output.channels)]


def _user() -> str:
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):
        return "unknown"


# ---------------------------------------------------------------------------------------------
# bioimageio.spec and bioimageio.core, offline


class _BioimageIO:
    """The bioimage.io libraries, imported on first use (the ``bioimageio`` extra)."""

    def __init__(self) -> None:
        try:
            import bioimageio.core
            import bioimageio.spec
            from bioimageio.spec.model.v0_5 import ModelDescr
        except ImportError:
            raise UserError(
                "--format bioimageio needs bioimageio.core: pip install 'bioim2im[bioimageio]'"
            ) from None
        self.core_version = bioimageio.core.__version__
        self.format_version = ModelDescr.implemented_format_version

    @contextmanager
    def _offline(self, urls: Sequence[str], root: Path | None = None) -> Iterator[None]:
        from bioimageio.spec import ValidationContext

        from bioim2im.formats.bioimageio.calls import bioimageio_calls

        options: dict[str, Any] = {
            "known_files": {url: None for url in urls},
            "disable_cache": True,
            "log_warnings": False,
            "progressbar": False,
        }
        if root is not None:
            options["root"] = root
        with bioimageio_calls(), ValidationContext(**options):
            yield

    def check_license(self, license: str) -> None:
        from typing import get_args

        from bioimageio.spec._internal import _generated_spdx_license_literals as spdx

        known = {*get_args(spdx.LicenseId), *get_args(spdx.DeprecatedLicenseId)}
        if license not in known:
            raise UserError(
                f"export.license {license!r} is not an SPDX license identifier "
                "(e.g. CC-BY-4.0, MIT, BSD-3-Clause; see https://spdx.org/licenses)"
            )

    def build(self, table: dict[str, Any], root: Path, urls: Sequence[str]) -> Any:
        from bioimageio.spec import InvalidDescr, build_description

        with self._offline(urls, root):
            descr = build_description(table)
        if isinstance(descr, InvalidDescr):
            raise UserError(
                "the model description is not valid bioimage.io (check the [export] metadata):",
                _problems(descr.validation_summary),
            )
        return descr

    def save(self, descr: Any, path: Path, *, folder: bool) -> None:
        from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

        with self._offline([]):
            if folder:
                save_bioimageio_package_as_folder(descr, output_path=path)
            else:
                save_bioimageio_package(descr, output_path=path)

    def test(self, package: Path, urls: Sequence[str]) -> None:
        from bioimageio.core import test_model

        with self._offline(urls), _quiet_output():
            summary = test_model(package)
        if summary.status != "passed":
            problems = _problems(summary)
            raise UserError(
                "bioimageio.core's model test failed; nothing was written: "
                + (problems[0] if problems else summary.status),
                problems[1:],
            )


def _problems(summary: Any) -> list[str]:
    found = []
    for detail in summary.details:
        for error in detail.errors:
            where = ".".join(map(str, error.loc))
            message = error.msg if len(error.msg) <= 300 else f"{error.msg[:300]}…"
            found.append(f"{detail.name}{f' ({where})' if where else ''}: {message}")
    return found or [f"{d.name}: {d.status}" for d in summary.details if d.status == "failed"]


@contextmanager
def _quiet_output() -> Iterator[None]:
    import contextlib

    with contextlib.redirect_stdout(io.StringIO()):
        yield


_LIBRARIES: list[_BioimageIO] = []


def _bioimageio() -> _BioimageIO:
    if not _LIBRARIES:
        _LIBRARIES.append(_BioimageIO())
    return _LIBRARIES[0]
