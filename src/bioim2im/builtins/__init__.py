"""The built-in plugin: registered through the ``bioim2im`` entry point like any third party.

Each submodule keeps one kind's factories and a ``register(registry)`` function. Submodules are
light: heavy libraries are imported inside the factories (or in the private ``_*.py`` modules
the factories use), so listing and validating components never imports torch.
"""

from __future__ import annotations

from pathlib import Path

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar


@hookimpl
def bioim2im_register_backbones(registry: Registrar) -> None:
    from bioim2im.builtins import backbones

    backbones.register(registry)


@hookimpl
def bioim2im_register_heads(registry: Registrar) -> None:
    from bioim2im.builtins import heads, instance

    heads.register(registry)
    instance.register_heads(registry)


@hookimpl
def bioim2im_register_discriminators(registry: Registrar) -> None:
    from bioim2im.builtins import discriminators

    discriminators.register(registry)


@hookimpl
def bioim2im_register_losses(registry: Registrar) -> None:
    from bioim2im.builtins import instance, losses

    losses.register(registry)
    instance.register_losses(registry)


@hookimpl
def bioim2im_register_transforms(registry: Registrar) -> None:
    from bioim2im.builtins import n2v, transforms

    transforms.register(registry)
    n2v.register(registry)


@hookimpl
def bioim2im_register_postprocessors(registry: Registrar) -> None:
    from bioim2im.builtins import instance, postprocess

    postprocess.register(registry)
    instance.register_postprocessors(registry)


@hookimpl
def bioim2im_register_readers(registry: Registrar) -> None:
    from bioim2im.builtins import io

    io.register_readers(registry)


@hookimpl
def bioim2im_register_writers(registry: Registrar) -> None:
    from bioim2im.builtins import io

    io.register_writers(registry)


@hookimpl
def bioim2im_register_metrics(registry: Registrar) -> None:
    from bioim2im.builtins import metrics

    metrics.register(registry)


@hookimpl
def bioim2im_register_optimizers(registry: Registrar) -> None:
    from bioim2im.builtins import optim

    optim.register_optimizers(registry)


@hookimpl
def bioim2im_register_schedulers(registry: Registrar) -> None:
    from bioim2im.builtins import optim

    optim.register_schedulers(registry)


@hookimpl
def bioim2im_register_loggers(registry: Registrar) -> None:
    from bioim2im.builtins import loggers

    loggers.register(registry)


def presets_dir() -> Path:
    """The shipped presets: inside the installed wheel, or the repo's top-level ``presets/``."""
    packaged = Path(__file__).resolve().parent.parent / "presets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "presets"


@hookimpl
def bioim2im_register_presets(registry: Registrar) -> None:
    for path in sorted(presets_dir().glob("*.toml")):
        registry.add(path.stem, path, _preset_description(path))


def _preset_description(path: Path) -> str:
    # The first sentence of a preset's leading comment is its description.
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            if line.strip() or words:
                break
            continue
        words.append(line.lstrip("# ").strip())
        if words[-1].endswith(".") or len(words) == 3:
            break
    text = " ".join(w for w in words if w)
    return text.split(". ")[0].removesuffix(".") + "." if text else ""
