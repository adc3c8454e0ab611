"""Realistic label maps for the loss benchmarks: background-dominated and spatially coherent.

Real segmentation patches are mostly background (ACDC: 96 % background, about 1.2–1.3 % for each of its three
structures) and every class forms one connected blob, so long runs of neighbouring voxels share a label. Uniformly
random labels have neither property, and kernels that accumulate into per-class buckets behave very differently on
them (every write to the same bucket versus writes spread over all buckets). :func:`nested_shells` draws, per image,
one ellipsoid at a random centre with random axes and cuts it into nested shells: the innermost holds the last class,
the outermost class 1, everything outside is background, with the voxel fractions given (ACDC's by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

ACDC_FRACTIONS = (0.9616, 0.0121, 0.0134, 0.0129)


def class_fractions(num_classes: int) -> list[float]:
    """ACDC's fractions for 4 classes; otherwise ACDC's background share with the foreground split evenly."""
    if num_classes == len(ACDC_FRACTIONS):
        return list(ACDC_FRACTIONS)
    foreground = (1 - ACDC_FRACTIONS[0]) / (num_classes - 1)
    return [ACDC_FRACTIONS[0]] + [foreground] * (num_classes - 1)


def nested_shells(
    batch: int, spatial: Sequence[int], fractions: Sequence[float], generator: torch.Generator
) -> torch.Tensor:
    """``(B, 1, *spatial)`` int64 label maps: class ``k`` fills the shell of an ellipsoid holding ``fractions[k]``.

    The voxels are ranked by their ellipsoidal radius ``r = ‖(x − c) / axes‖`` around a random centre; the
    ``fractions[K−1]`` share nearest the centre gets class ``K − 1``, the next ``fractions[K−2]`` class ``K − 2``, and
    so on, so the classes come out with exactly the requested voxel counts (up to rounding) as nested shells.
    """
    grids = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in spatial), indexing="ij")
    counts = torch.tensor([round(f * torch.Size(spatial).numel()) for f in fractions[1:]])
    maps = []
    for _ in range(batch):
        centre = [n * (0.3 + 0.4 * float(torch.rand((), generator=generator))) for n in spatial]
        axes = [n * (0.5 + float(torch.rand((), generator=generator))) for n in spatial]
        radius = sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, axes))
        order = torch.as_tensor(radius).flatten().argsort()
        labels = torch.zeros(order.numel(), dtype=torch.int64)
        start = 0
        for k in range(len(fractions) - 1, 0, -1):
            count = int(counts[k - 1])
            labels[order[start : start + count]] = k
            start += count
        maps.append(labels.reshape(1, *spatial))
    return torch.stack(maps)
