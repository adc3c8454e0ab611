"""Which training items each step sees (:class:`PatchSampler`) and how a patch is cut from one (MONAI transforms)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["PatchSampler", "class_absence", "train_transform"]


class PatchSampler(torch.utils.data.distributed.DistributedSampler):
    """A :class:`~torch.utils.data.distributed.DistributedSampler` with a chosen epoch length.

    Every epoch all processes draw the same shuffled sequence of item indices (concatenated random
    permutations of the items, seeded by ``seed`` and the epoch, as DistributedSampler does) and each takes
    its own ``samples_per_replica`` of it: uniform sampling of items, disjoint across processes, the same for
    every loss trained from the same seed. Call :meth:`set_epoch` each epoch.
    """

    def __init__(
        self, num_items: int, samples_per_replica: int, num_replicas: int = 1, rank: int = 0, seed: int = 0
    ) -> None:
        # DistributedSampler needs a sized dataset only for its own __len__/__iter__, which we override.
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)  # type: ignore[arg-type]
        self.num_items = num_items
        self.samples_per_replica = samples_per_replica

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        total = self.samples_per_replica * self.num_replicas
        reps = math.ceil(total / self.num_items)
        order = torch.cat([torch.randperm(self.num_items, generator=g) for _ in range(reps)])[:total]
        return iter(order[self.rank : total : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.samples_per_replica


def train_transform(patch_size: Sequence[int]) -> Any:
    """Pad to the patch size where an item is smaller, then crop one uniformly placed patch (MONAI transforms)."""
    from monai.transforms import Compose, EnsureTyped, RandSpatialCropd, SpatialPadd

    keys = ["image", "label"]
    return Compose(
        [
            SpatialPadd(keys=keys, spatial_size=tuple(patch_size)),
            RandSpatialCropd(keys=keys, roi_size=tuple(patch_size), random_size=False),
            EnsureTyped(keys=keys, track_meta=False),
        ]
    )


def class_absence(
    items: Sequence[dict[str, Any]], patch_size: Sequence[int], num_patches: int, num_classes: int, seed: int = 0
) -> np.ndarray:
    """Per class, the share of training patches in which the class is absent (empty (patch, class) pairs).

    The patches are the first ``num_patches`` that training with ``seed`` crops in its first epoch on one process
    (the same :class:`PatchSampler` order and :func:`train_transform` random state), so with ``num_patches =
    steps_per_epoch × batch_size`` they are exactly that epoch's patches.
    """
    from .runtime import track_meta

    transform = train_transform(patch_size)
    transform.set_random_state(seed=seed)
    sampler = PatchSampler(len(items), num_patches, seed=seed)
    sampler.set_epoch(0)
    present = np.zeros(num_classes, dtype=np.int64)
    with track_meta(False):
        for index in sampler:
            label = torch.as_tensor(transform(items[index])["label"]).reshape(-1).long()
            present += (torch.bincount(label, minlength=num_classes) > 0).numpy()
    return 1.0 - present / num_patches
