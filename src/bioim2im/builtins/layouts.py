"""The built-in data layouts: image files and their targets, found the way ``data.layout``
says (``folders``, ``pairs``, ``csv``, or ``auto``: whichever ``data.path`` looks like; see
:mod:`bioim2im.data.sources`). Light: the data modules are imported when a layout is used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.data.preflight import Report
    from bioim2im.data.sources import Splits
    from bioim2im.plugin.registry import ComponentRegistry


class ImageLayout:
    """Image files, each with a target file per target name and an optional cost map."""

    def __init__(self, name: str) -> None:
        self.name = name

    def preflight(
        self,
        preset: Preset,
        *,
        registry: ComponentRegistry,
        run_dir: Path | None = None,
        scan: bool = True,
    ) -> Report:
        from bioim2im.data.preflight import image_preflight

        return image_preflight(preset, registry=registry, run_dir=run_dir, scan=scan)

    def datasets(
        self,
        preset: Preset,
        run_dir: Path | None = None,
        *,
        registry: ComponentRegistry,
        check: bool = True,
    ) -> tuple[Any, Any]:
        from bioim2im.data.datasets import image_datasets

        return image_datasets(preset, run_dir, registry=registry, check=check)

    def image_pairs(self, preset: Preset, *, registry: ComponentRegistry) -> Splits:
        from bioim2im.data.sources import find_splits, reader_suffixes

        return find_splits(
            preset.data,
            preset.model.heads,
            seed=preset.train.seed,
            suffixes=reader_suffixes(registry),
        )


LAYOUTS = {
    "auto": "Image files in whichever of the folders, pairs and csv layouts data.path is in",
    "folders": "Image files in IM/, targets in GT/ (one folder per target name), cost maps in CM/",
    "pairs": "Image files NAME_IM.tif beside their targets NAME_GT.tif and cost maps NAME_CM.tif",
    "csv": "A CSV manifest with a column per file role and an optional split column",
}


def _factory(name: str) -> Callable[[], ImageLayout]:
    def layout() -> ImageLayout:
        return ImageLayout(name)

    layout.__name__ = layout.__qualname__ = f"{name}_layout"
    return layout


@hookimpl
def bioim2im_register_layouts(registry: Registrar) -> None:
    for name, description in LAYOUTS.items():
        registry.add(name, _factory(name), description)
