"""The ``cellmap`` data layout: ``data.path`` is a CellMap datasplit CSV (the challenge
toolbox's, or ``bioim2im cellmap datasplit``'s), and the layout's parameters say which classes
to train and how patches are drawn from the crops::

    [data.layout]
    name = "cellmap"
    classes = ["mito", "nuc"]
    input_scale = [8.0, 8.0, 8.0]

Light: the crops, patches and stores are imported when the layout is used, so that ``check``
without ``--data`` and ``list-plugins`` import no heavy library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from bioim2im.errors import UserError

if TYPE_CHECKING:
    from bioim2im.config.schema import Preset
    from bioim2im.data.preflight import Report
    from bioim2im.data.sources import Splits
    from bioim2im.plugin.registry import ComponentRegistry

NAME = "cellmap"
"""The layout's registered name."""


def _scale(value: list[float] | None) -> list[float] | None:
    if value is not None and (len(value) != 3 or any(v <= 0 for v in value)):
        raise ValueError(f"must be 3 positive numbers (nm, Z Y X), got {value}")
    return value


def _force(value: Any) -> Any:
    # The toolbox's true/false.
    return {True: "both", False: "no"}.get(value, value) if isinstance(value, bool) else value


Scale = Annotated[list[float], AfterValidator(_scale)]
ForceAllClasses = Annotated[Literal["no", "train", "validate", "both"], BeforeValidator(_force)]
Target = Literal["mask", "distance", "signed_distance"]
REGRESSION_LOSSES = ("mse", "l1", "smooth_l1")
"""The losses a distance target takes (the others take 0/1 targets)."""


@dataclass(frozen=True)
class CellMapLayout:
    """The crops of a CellMap datasplit, drawn as patches in physical space (see
    :mod:`bioim2im_cellmap.patches`); the fields are the layout's parameters."""

    classes: list[str]
    input_scale: list[float]
    target_shape: list[int] | None = None
    target_scale: list[float] | None = None
    skip_coarser: bool = False
    mutual_exclusion: bool = False
    class_table: Path | None = None
    force_all_classes: str | None = None
    weighted_sampling: bool = True
    pos_weight: bool = True
    search_path: str | None = None
    validation_fraction: float = 0.15
    target: str = "mask"

    def preflight(
        self,
        preset: Preset,
        *,
        registry: ComponentRegistry,
        run_dir: Path | None = None,
        scan: bool = True,
    ) -> Report:
        """The crops of the datasplit per split, and every problem in opening them."""
        from bioim2im.data.preflight import Report
        from bioim2im_cellmap.patches import open_split

        report = Report(preset.data.path, NAME)
        try:
            splits = open_split(preset, self)
        except UserError as exc:
            report.problems.append(str(exc))
            return report
        for usage, opened in splits.items():
            report.pairs[usage] = report.entries[usage] = len(opened.crops)
            report.problems += opened.problems
            report.found[usage] = [
                f"{crop.row.dataset} {crop.row.crop_path.rstrip('/').rsplit('/', 1)[-1]}: "
                f"{', '.join(crop.labels)}"
                for crop in opened.crops
            ]
        return report

    def datasets(
        self,
        preset: Preset,
        run_dir: Path | None = None,
        *,
        registry: ComponentRegistry,
        check: bool = True,
    ) -> tuple[Any, Any]:
        """Patches of the training crops, and of the validation crops (or None)."""
        from bioim2im_cellmap.patches import cellmap_datasets

        return cellmap_datasets(preset, self, run_dir, registry=registry)

    def image_pairs(self, preset: Preset, *, registry: ComponentRegistry) -> Splits:
        raise UserError(
            "CellMap crops are not single image files (their labels cover parts of larger "
            "volumes, one array per class)"
        )


def cellmap(
    *,
    classes: list[str],
    input_scale: Scale = (8.0, 8.0, 8.0),  # type: ignore[assignment]
    target_shape: list[int] | None = None,
    target_scale: Annotated[list[float] | None, AfterValidator(_scale)] = None,
    skip_coarser: bool = False,
    mutual_exclusion: bool = False,
    class_table: Path | None = None,
    force_all_classes: ForceAllClasses | None = None,
    weighted_sampling: bool = True,
    pos_weight: bool = True,
    search_path: str | None = None,
    validation_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.15,
    target: Target = "mask",
) -> CellMapLayout:
    """A CellMap challenge datasplit (data.path): crops of labels over large raw volumes.

    Args:
        classes: The CellMap classes to train, in the order of the head's channels (the head
            gets one channel per class).
        input_scale: Voxel size (nm, Z Y X) of the network's input; data.patch_size is its
            shape. The raw data's pyramid level nearest it is read (resampled when it differs).
        target_shape: Voxels supervised at the centre of each patch (default: all of
            data.patch_size); the rest of the input is context.
        target_scale: Voxel size (nm, Z Y X) whose label level is read (default: input_scale);
            labels are resampled (nearest) onto the input's grid.
        skip_coarser: Treat a class annotated only coarser than target_scale as not annotated
            in that crop.
        mutual_exclusion: Where an annotated class is present, classes it excludes
            (class_table) count as known negatives in crops that do not annotate them.
        class_table: The toolbox's classes.csv (name,id,"part ids"); default: the challenge's
            class table. Relative to the preset file.
        force_all_classes: A crop of that split ("train" or "validate") that does not
            annotate every class of classes is used in the other split instead; "both" (the
            toolbox's true) leaves such crops out; "no" uses the datasplit as it is. Default:
            "validate" for a datasplit training creates (as the toolbox's train does), and an
            existing datasplit as it is (the toolbox never changes one); set, it applies to
            both. It neither drops crops from batches nor redraws them. A split it empties
            is an error naming what each crop lacks.
        weighted_sampling: Draw crops by their class counts (each class an equal share), not
            uniformly.
        pos_weight: Weigh each class's positive voxels by its background/foreground ratio in
            the training crops (the toolbox's pos_weight).
        search_path: Where the crops are, with {dataset} and {crop} (e.g.
            'data/{dataset}/{dataset}.zarr/recon-1/labels/groundtruth/{crop}'): when data.path
            does not exist, training writes it there from the crops found annotating any of
            classes, as the toolbox's train does (force_all_classes applied); check --data
            shows it without writing.
        validation_fraction: Share of the crops a created datasplit puts in validation (the
            toolbox's train uses 0.15), seeded by train.seed.
        target: What the head learns per class, as the toolbox's target_value_transforms with
            cellmap-data's transforms: "mask" (0/1, its default Binarize), "distance" (each
            foreground voxel's distance to the class's background, 0 outside; its
            DistanceTransform) or "signed_distance" (that distance inside, minus the distance
            to the foreground outside; its SignedDistanceTransform), in voxels of input_scale,
            over each patch. Distances need a regression loss (mse, l1, smooth_l1); the head's
            sigmoid then 0.5 threshold still gives each class's mask (distance > 0).
    """
    return CellMapLayout(
        classes=list(classes),
        input_scale=list(input_scale),
        target_shape=target_shape,
        target_scale=target_scale,
        skip_coarser=skip_coarser,
        mutual_exclusion=mutual_exclusion,
        class_table=class_table,
        force_all_classes=force_all_classes,
        weighted_sampling=weighted_sampling,
        pos_weight=pos_weight,
        search_path=search_path,
        validation_fraction=validation_fraction,
        target=target,
    )


def settings(preset: Preset) -> CellMapLayout:
    """The ``cellmap`` layout of ``preset``; a UserError when it has another layout."""
    layout = preset.data.layout
    if layout.name != NAME:
        raise UserError(f'data.layout is "{layout.name}", not "{NAME}"')
    return cellmap(**layout.params())


def check_preset(preset: Preset, params: dict[str, Any]) -> None:
    """The layout's rules over the preset: one semantic head with one independent channel per
    class (out_channels defaults to that), no disk cache, a target_shape inside the patch."""
    layout = cellmap(**params)
    classes, data = layout.classes, preset.data
    if not classes:
        raise ValueError('data.layout.classes is empty: give the classes to train, e.g. ["mito"]')
    if len(set(classes)) != len(classes):
        raise ValueError(f"data.layout.classes {classes} names a class twice")
    heads = preset.model.heads
    if len(heads) != 1:
        raise ValueError(
            f'data.layout "{NAME}" trains one head (one channel per class), got {list(heads)}'
        )
    ((name, head),) = heads.items()
    if "out_channels" not in head.model_fields_set:
        # One channel per class unless the preset says otherwise.
        head.out_channels = len(classes)
    if head.task != "semantic" or head.out_channels != len(classes):
        raise ValueError(
            f'model.heads.{name} must be task = "semantic" with out_channels = '
            f"{len(classes)} (one per class of data.layout.classes), got task {head.task!r} "
            f"and {head.out_channels} channel(s)"
        )
    loss = head.loss.params()
    if head.loss.name == "ce" or loss.get("softmax") or loss.get("to_onehot_y"):
        raise ValueError(
            f"model.heads.{name}.loss: CellMap classes overlap and are annotated one by one; use "
            "independent channels (sigmoid = true, or bce), not softmax classes"
        )
    if layout.target != "mask" and head.loss.name not in REGRESSION_LOSSES:
        raise ValueError(
            f'data.layout.target = "{layout.target}" gives distances, not 0/1 masks: '
            f"model.heads.{name}.loss must be a regression loss ({', '.join(REGRESSION_LOSSES)}), "
            f'got "{head.loss.name}"'
        )
    if data.cache == "disk":
        raise ValueError(
            f'data.cache = "disk" is not available with data.layout "{NAME}": use "memory" '
            '(crops held in memory while they fit) or "none" (read from the stores patch by patch)'
        )
    target = layout.target_shape
    if target is not None and (
        len(target) != len(data.patch_size)
        or any(t < 1 or t > p for t, p in zip(target, data.patch_size, strict=True))
    ):
        raise ValueError(
            f"data.layout.target_shape {target} must have one size per axis of data.patch_size "
            f"{data.patch_size}, each between 1 and the patch size"
        )
