"""Training and validation patches: a map-style dataset whose item ``i`` is a pure function of
``(seed, i)``.

``dataset[i]`` seeds ``np.random.default_rng([seed, i])`` and with it picks the image, the patch
(uniformly, or centred on a labelled voxel for ``foreground_fraction`` of the patches) and every
augmentation, so the engine resumes exactly by index and DDP ranks draw disjoint indices.

An item maps to float32 tensors (C, *patch_size), a head's target and weight on that head's
grid (without the axes it projects away, times its upsampling):

- ``"image"``: the normalised input;
- ``"target/<head>"``: the head's target, encoded for its task (see :mod:`bioim2im.data.targets`);
- ``"weight/<head>"``: the cost map times 0 where the target is unannotated: 1 channel, or one
  per class for a semantic target of one mask per class (a class unannotated at a pixel drops
  that class only);
- validation only, ``"truth/<head>"``: the target before encoding (labels as float, or the
  normalised regression target), for metrics on postprocessed predictions, and ``"box/<head>"``:
  (start, stop) per axis of the head's grid where the image lies (not its padding).

Unpaired data (CycleGAN): each head's target patch comes from one of that head's own target
images, drawn with the same generator, independently of the input's image and patch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset

from bioim2im.data.cache import ArrayCache
from bioim2im.data.targets import INSTANCE_CHANNELS, encode, split_valid
from bioim2im.data.transforms import Augmentation
from bioim2im.data.volumes import (
    Entry,
    HeadTarget,
    Preparation,
    Volume,
    estimate_bytes,
    load_volume,
    too_small,
)
from bioim2im.errors import UserError

# A patch below data.min_foreground is drawn again, at most this many times (then the best wins).
MAX_DRAWS = 10


class PatchDataset(Dataset[dict[str, torch.Tensor]]):
    """Patches of ``entries``: ``len(entries) * patches_per_image`` per epoch.

    Indices past ``len(self)`` are valid too (later epochs): training streams an endless index
    sequence (see :func:`bioim2im.data.loader.make_loader`). Training visits every image
    ``patches_per_image`` times per epoch, in an order shuffled per epoch; validation
    (``validation=True``) takes ``patches_per_image`` fixed patches of each image in turn.

    ``unpaired_targets`` (head name -> entries of its target files) makes the data unpaired:
    ``entries`` then hold inputs only.
    """

    def __init__(
        self,
        entries: Sequence[Entry],
        prep: Preparation,
        *,
        patch_size: Sequence[int],
        cache: ArrayCache | None = None,
        augment: Augmentation | None = None,
        patches_per_image: int = 4,
        foreground_fraction: float = 0.33,
        class_balanced: bool = False,
        min_foreground: float = 0.0,
        pad: bool = True,
        seed: int = 0,
        validation: bool = False,
        unpaired_targets: Mapping[str, Sequence[Entry]] | None = None,
    ) -> None:
        if not entries:
            raise UserError("no images to draw patches from")
        self.entries = list(entries)
        self.prep = prep
        # Each head's unpaired target entries; empty for paired data.
        self.unpaired = {head: list(found) for head, found in (unpaired_targets or {}).items()}
        # How each kind of entry is loaded: key None for the inputs, a head's name for its
        # unpaired target images.
        self._preps: dict[str | None, Preparation] = {None: prep}
        if unpaired_targets is not None:
            lacking = [h.head for h in prep.heads if not self.unpaired.get(h.head)]
            if lacking:
                raise UserError(f"no target images to draw patches from for head(s) {lacking}")
            self._preps = {
                None: replace(prep, heads=()),
                **{h.head: unpaired_preparation(prep, h) for h in prep.heads},
            }
        self.patch_size = tuple(int(p) for p in patch_size)
        self.cache = cache or ArrayCache("memory")
        self.augment = augment
        self.patches_per_image = patches_per_image
        self.foreground_fraction = foreground_fraction
        self.class_balanced = class_balanced
        self.min_foreground = min_foreground
        self.pad = pad
        self.seed = seed
        self.validation = validation
        self._volumes: dict[tuple[str | None, int], Volume] = {}
        self._epoch: tuple[int, np.ndarray] | None = None
        self._check()

    def _check(self) -> None:
        for head in self.prep.heads:
            if (
                head.task == "instance"
                and head.encode is None
                and head.out_channels not in INSTANCE_CHANNELS
            ):
                raise UserError(
                    f"model.heads.{head.head}: an instance head has 1 (foreground), 2 (foreground, "
                    f"boundary) or 3 (background/interior/boundary classes) output channels, "
                    f"not {head.out_channels}"
                )
        if len(self.patch_size) != self.prep.spatial_dims:
            raise UserError(
                f"patch size {list(self.patch_size)} does not have {self.prep.spatial_dims} axes"
            )
        problem = None if self.pad else too_small(self.entries, self.patch_size)
        if problem:
            raise UserError(problem)

    def __len__(self) -> int:
        return len(self.entries) * self.patches_per_image

    def epoch_length(self, batch_size: int) -> int:
        """Optimizer steps per epoch at ``batch_size`` patches per step."""
        return epoch_length(len(self.entries), self.patches_per_image, batch_size)

    # -- loading -----------------------------------------------------------------------------

    def volume(self, number: int, head: str | None = None) -> Volume:
        """Entry ``number`` ready for patch drawing, loaded once per process: an input entry,
        or with ``head`` one of that head's unpaired target entries."""
        found = self._volumes.get((head, number))
        if found is None:
            entry = self.entries[number] if head is None else self.unpaired[head][number]
            lazy = self.cache.mode == "none" or (
                self.cache.mode == "memory" and not self.cache.has_room(estimate_bytes(entry))
            )
            found = load_volume(entry, self._preps[head], self.cache, lazy=lazy)
            self._volumes[(head, number)] = found
        return found

    def preload(self) -> None:
        """Load every entry now (before DataLoader workers fork, so that they share the arrays).

        Threads suffice: decoding, resampling and normalising release the GIL.
        """
        keys: list[tuple[str | None, int]] = [(None, n) for n in range(len(self.entries))]
        for head, found in self.unpaired.items():
            keys += [(head, n) for n in range(len(found))]
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(lambda key: self.volume(key[1], key[0]), keys))

    # -- drawing -----------------------------------------------------------------------------

    def _entry_for(self, index: int) -> int:
        if self.validation:
            return (index // self.patches_per_image) % len(self.entries)
        per_epoch = len(self)
        epoch, position = divmod(index, per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            order = np.random.default_rng([self.seed, epoch, 1]).permutation(per_epoch) % len(
                self.entries
            )
            self._epoch = (epoch, order)
        return int(self._epoch[1][position])

    def _draw(
        self, volume: Volume, rng: np.random.Generator, *, centred: bool = False
    ) -> tuple[int, ...]:
        """Patch start per axis (negative or past the end where the image must be padded)."""
        centred = rng.random() < self.foreground_fraction or centred
        foreground = volume.foreground
        centre = None
        if centred and foreground is not None and foreground.labelled.size:
            indices = foreground.labelled
            if self.class_balanced and foreground.classes:
                classes = sorted(foreground.classes)
                indices = foreground.classes[classes[int(rng.integers(len(classes)))]]
            centre = np.unravel_index(int(indices[rng.integers(indices.size)]), volume.shape)
        starts = []
        for axis, (size, patch) in enumerate(zip(volume.shape, self.patch_size, strict=True)):
            if size < patch:
                starts.append(-int(rng.integers(0, patch - size + 1)))
            elif centre is not None:
                starts.append(int(np.clip(centre[axis] - patch // 2, 0, size - patch)))
            else:
                starts.append(int(rng.integers(0, size - patch + 1)))
        return tuple(starts)

    def _read(self, volume: Volume, starts: tuple[int, ...]) -> dict[str, np.ndarray]:
        region, padding = [], []
        for start, patch, size in zip(starts, self.patch_size, volume.shape, strict=True):
            low, high = max(start, 0), min(start + patch, size)
            region.append(slice(low, high))
            padding.append((low - start, start + patch - high))

        def padded(array: np.ndarray, pads: list[tuple[int, int]], mode: str) -> np.ndarray:
            if all(p == (0, 0) for p in pads):
                return array
            return np.pad(array, [(0, 0), *pads], mode=mode)  # type: ignore[call-overload]

        sample = {"image": padded(volume.image.read(region), padding, "reflect")}
        cost_map = volume.cost_map.read(region) if volume.cost_map is not None else None
        for head in self.prep.heads:
            if head.head not in volume.targets:
                continue  # unpaired: the target comes from another image (_unpaired_targets)
            target = volume.targets[head.head].read(head.region(region))
            weights = head.cost_map(cost_map) if cost_map is not None else None
            per_class = head.task == "semantic" and target.shape[0] > 1
            target, weight = split_valid(target, head.ignore_value, weights, per_channel=per_class)
            sample[f"target/{head.head}"] = padded(target, head.padding(padding), "constant")
            sample[f"weight/{head.head}"] = padded(weight, head.padding(padding), "constant")
        return sample

    def _labelled_fraction(self, sample: Mapping[str, np.ndarray]) -> float:
        labelled: np.ndarray | None = None
        for head in self.prep.heads:
            if head.is_label and head.same_grid:
                annotated = sample[f"weight/{head.head}"] > 0
                mask = np.asarray(((sample[f"target/{head.head}"] > 0) & annotated).any(axis=0))
                labelled = mask if labelled is None else labelled | mask
        return 0.0 if labelled is None else float(labelled.mean())

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """Item ``index`` as float32 arrays (what ``dataset[index]`` returns, before torch)."""
        rng = np.random.default_rng([self.seed, index])
        volume = self.volume(self._entry_for(index))
        starts = self._draw(volume, rng)
        sample = self._read(volume, starts)
        if self.min_foreground > 0 and volume.foreground is not None:
            best, fraction = (sample, starts), self._labelled_fraction(sample)
            for _ in range(MAX_DRAWS - 1):
                if fraction >= self.min_foreground:
                    break
                # Redrawn around a labelled voxel: the likeliest way to reach min_foreground.
                drawn = self._draw(volume, rng, centred=True)
                candidate = self._read(volume, drawn)
                candidate_fraction = self._labelled_fraction(candidate)
                if candidate_fraction > fraction:
                    best, fraction = (candidate, drawn), candidate_fraction
            sample, starts = best
        if self.unpaired:
            sample.update(self._unpaired_targets(rng))
        if self.validation:
            sample.update({f"truth/{h.head}": sample[f"target/{h.head}"] for h in self.prep.heads})
            sample.update(self._image_boxes(volume, starts))
        elif self.augment is not None:
            sample = self.augment(sample, rng)
        for head in self.prep.heads:
            key = f"target/{head.head}"
            if head.encode is not None:
                sample[key] = head.encode(sample[key])
            else:
                sample[key] = encode(sample[key], head.task, head.out_channels)
        return sample

    def _image_boxes(self, volume: Volume, starts: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Validation: ``box/<head>``, where the image lies in the patch on each head's grid
        ((start, stop) per axis): an image smaller than the patch is padded, and the metrics
        score the image, not its padding."""
        padding = [
            (max(-start, 0), max(start + patch - size, 0))
            for start, patch, size in zip(starts, self.patch_size, volume.shape, strict=True)
        ]
        boxes = {}
        for head in self.prep.heads:
            kept = head.kept(self.patch_size)
            shape = [p * f for p, f in zip(kept, head.scale or [1] * len(kept), strict=True)]
            pads = head.padding(padding)
            boxes[f"box/{head.head}"] = np.array(
                [(before, n - after) for (before, after), n in zip(pads, shape, strict=True)],
                dtype=np.float32,
            )
        return boxes

    def _unpaired_targets(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Each head's target and weight, from a patch of one of its target images."""
        sample = {}
        for head in self.prep.heads:
            volume = self.volume(int(rng.integers(len(self.unpaired[head.head]))), head.head)
            patch = self._read(volume, self._draw(volume, rng))["image"]
            target, weight = split_valid(patch, head.ignore_value, None)
            sample[f"target/{head.head}"], sample[f"weight/{head.head}"] = target, weight
        return sample

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
            for k, v in self.sample(index).items()
        }


def unpaired_preparation(prep: Preparation, head: HeadTarget) -> Preparation:
    """How ``head``'s unpaired target files are read: as input images of their own, with the
    target's channels and normalisation."""
    return replace(
        prep,
        in_channels=head.out_channels if head.task == "regression" else 1,
        normalize=head.normalize,  # type: ignore[arg-type]
        normalize_spec=head.normalize_spec,  # type: ignore[arg-type]
        heads=(),
    )


def epoch_length(n_images: int, patches_per_image: int, batch_size: int) -> int:
    """Optimizer steps per epoch: every training image visited ``patches_per_image`` times."""
    return math.ceil(n_images * patches_per_image / batch_size)
