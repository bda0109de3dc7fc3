"""The pre- and postprocessing operations of bioimage.io model packages, on bioim2im's arrays.

An operation is the table a package's ``rdf.yaml`` lists (``{"id": "scale_range", "kwargs":
{...}}``); here it works on one image shaped ``(C, *spatial)`` whose axes the package names
(``axis_ids``, e.g. ``("channel", "y", "x")``). Operations that need statistics (percentiles,
mean and standard deviation) compute them once per image with bioim2im's own estimators (the
same strided subsample as a run's normalisation) and apply them block by block, so a package
made by bioim2im normalises exactly as its run does; their formulas are the specification's
(``eps`` added to the denominator), which bioimage.io's own tools also follow.

:class:`Preprocessing` is a normalisation (``statistics`` / ``apply``); postprocessing steps are
pointwise functions, and operations that would need statistics of a whole output are refused
(a block-wise prediction never holds the whole output).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bioim2im.errors import UserError

Operation = Mapping[str, Any]
"""``{"id": ..., "kwargs": {...}}`` as in a package's description."""

PREPROCESSING = (
    "binarize",
    "clip",
    "ensure_dtype",
    "fixed_zero_mean_unit_variance",
    "scale_linear",
    "scale_range",
    "sigmoid",
    "softmax",
    "zero_mean_unit_variance",
)
POINTWISE = (
    "binarize",
    "clip",
    "ensure_dtype",
    "fixed_zero_mean_unit_variance",
    "scale_linear",
    "sigmoid",
    "softmax",
)
"""Postprocessing operations that look at one voxel (or its channels) at a time."""


def _kwargs(operation: Operation) -> dict[str, Any]:
    return dict(operation.get("kwargs") or {})


class Preprocessing:
    """A package's preprocessing of its input, as a bioim2im normalisation."""

    def __init__(self, operations: Sequence[Operation], axis_ids: Sequence[str]) -> None:
        self.axis_ids = tuple(axis_ids)
        for operation in operations:
            if operation.get("id") not in PREPROCESSING:
                raise UserError(
                    f"preprocessing operation {operation.get('id')!r} is not supported "
                    f"(supported: {', '.join(PREPROCESSING)})"
                )
            reference = _kwargs(operation).get("reference_tensor")
            if reference is not None and operation.get("tensor") not in (None, reference):
                raise UserError(
                    f"preprocessing {operation['id']}: statistics of another tensor "
                    f"({reference}) are not supported"
                )
        self.operations = list(operations)

    def statistics(self, image: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Per operation, the statistics it needs, computed on ``image`` as the operations
        before it left it."""
        found = []
        for operation in self.operations:
            stats = _statistics(operation, image, self.axis_ids)
            found.append(stats)
            image = _apply(operation, image, stats, self.axis_ids)
        return found

    def apply(self, image: np.ndarray, stats: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
        for operation, values in zip(self.operations, stats, strict=True):
            image = _apply(operation, image, values, self.axis_ids)
        return np.asarray(image, dtype=np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.apply(image, self.statistics(image))


def postprocessing_steps(
    operations: Sequence[Operation], axis_ids: Sequence[str]
) -> tuple[Callable[[np.ndarray], np.ndarray], ...]:
    """A package's postprocessing of one output as pointwise bioim2im steps."""
    steps = []
    for operation in operations:
        name = operation.get("id")
        if name not in POINTWISE:
            raise UserError(
                f"postprocessing operation {name!r} needs statistics of the whole output, which "
                f"block-wise prediction never holds (supported: {', '.join(POINTWISE)})"
            )

        def step(values: np.ndarray, operation: Operation = operation) -> np.ndarray:
            return _apply(operation, values, {}, axis_ids)

        steps.append(step)
    return tuple(steps)


# ---------------------------------------------------------------------------------------------
# The operations


def _reduced(operation: Operation, axis_ids: Sequence[str]) -> tuple[int, ...]:
    """The array axes an operation's statistics are taken over (the batch is one image here;
    no axes named: all of them)."""
    names = _kwargs(operation).get("axes")
    if names is None:
        return tuple(range(len(axis_ids)))
    unknown = [a for a in names if a not in (*axis_ids, "batch")]
    if unknown:
        raise UserError(
            f"{operation['id']}: axes {unknown} are not axes of the tensor ({', '.join(axis_ids)})"
        )
    return tuple(axis_ids.index(a) for a in names if a != "batch")


def _statistics(
    operation: Operation, image: np.ndarray, axis_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    from bioim2im.data.transforms import Percentile, ZScore

    name, kwargs = operation["id"], _kwargs(operation)
    if name == "scale_range":
        low, high = _per_group(
            image,
            _reduced(operation, axis_ids),
            Percentile(kwargs.get("min_percentile", 0.0), kwargs.get("max_percentile", 100.0)),
        )
        return {"low": low, "high": high}
    if name == "zero_mean_unit_variance":
        mean, std = _per_group(image, _reduced(operation, axis_ids), ZScore())
        return {"mean": mean, "std": std}
    if name == "clip" and (
        kwargs.get("min_percentile") is not None or kwargs.get("max_percentile") is not None
    ):
        low, high = _per_group(
            image,
            _reduced(operation, axis_ids),
            Percentile(kwargs.get("min_percentile") or 0.0, kwargs.get("max_percentile") or 100.0),
        )
        return {"low": low, "high": high}
    return {}


def _per_group(image: np.ndarray, reduced: tuple[int, ...], estimator: Any) -> tuple[Any, Any]:
    """Two statistics of ``estimator`` (bioim2im's Percentile or ZScore, which take
    ``(groups, ...)`` arrays) for every group of voxels the kept axes define, broadcastable to
    ``image``."""
    kept = [a for a in range(image.ndim) if a not in reduced]
    moved = np.moveaxis(image, kept, list(range(len(kept))))
    groups = moved.reshape(-1, *moved.shape[len(kept) :]) if kept else moved[None]
    stats = estimator.statistics(groups)
    shape = [image.shape[a] if a in kept else 1 for a in range(image.ndim)]
    return stats[:, 0].reshape(shape), stats[:, 1].reshape(shape)


def _along(values: Any, axis: str | None, axis_ids: Sequence[str], ndim: int) -> np.ndarray:
    """A scalar, or one value per index of ``axis``, broadcastable to an image."""
    array = np.asarray(values, dtype=np.float32)
    if axis is None or array.ndim == 0:
        return array
    shape = [1] * ndim
    shape[list(axis_ids).index(axis)] = -1
    return array.reshape(shape)


def _apply(
    operation: Operation,
    image: np.ndarray,
    stats: Mapping[str, np.ndarray],
    axis_ids: Sequence[str],
) -> np.ndarray:
    name, kwargs = operation["id"], _kwargs(operation)
    eps = np.float32(kwargs.get("eps", 1e-6))
    if name == "scale_range":
        lower, upper = stats["low"].astype(np.float32), stats["high"].astype(np.float32)
        return (image - lower) / (upper - lower + eps)
    if name == "zero_mean_unit_variance":
        mean, std = stats["mean"].astype(np.float32), stats["std"].astype(np.float32)
        return (image - mean) / (std + eps)
    if name == "fixed_zero_mean_unit_variance":
        axis = kwargs.get("axis")
        mean = _along(kwargs["mean"], axis, axis_ids, image.ndim)
        std = _along(kwargs["std"], axis, axis_ids, image.ndim)
        return (image - mean) / (std + eps)
    if name == "scale_linear":
        axis = kwargs.get("axis")
        gain = _along(kwargs.get("gain", 1.0), axis, axis_ids, image.ndim)
        offset = _along(kwargs.get("offset", 0.0), axis, axis_ids, image.ndim)
        return image * gain + offset
    if name == "clip":
        low: Any = stats["low"] if "low" in stats else kwargs.get("min")
        high: Any = stats["high"] if "high" in stats else kwargs.get("max")
        return np.clip(image, low, high)
    if name == "sigmoid":
        from scipy import special

        return special.expit(image)
    if name == "softmax":
        from scipy import special

        return special.softmax(image, axis=list(axis_ids).index(kwargs.get("axis", "channel")))
    if name == "binarize":
        threshold = _along(kwargs["threshold"], kwargs.get("axis"), axis_ids, image.ndim)
        return image > threshold
    if name == "ensure_dtype":
        return _ensure_dtype(image, kwargs["dtype"])
    raise UserError(f"processing operation {name!r} is not supported")


def _ensure_dtype(image: np.ndarray, dtype: str) -> np.ndarray:
    # A plain cast, as bioimage.io's tools do.
    return image.astype(bool if dtype == "bool" else np.dtype(dtype))
