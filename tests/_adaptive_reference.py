"""Eq. 2 at running per-voxel averages, computed from scratch: the tests' reference for AdaptiveMimeLoss's weights.

Nothing here calls the package. The operating point of starting weights is the inverse of Eq. 2,
``U = 2/(a + b)``, ``I = b U²/2``; a training step folds the batch's mean per-image sums (as fractions of the image's
voxel count) into exponential moving averages; the weights at ``N`` voxels are Eq. 2 at ``I = ī N``, ``U = ū N``,
``a = 2 (U − I)/U²``, ``b = 2 I/U²``, with ``I ≤ U/2``. (No floor: use it where the running union stays above
``min_union_share`` of its start.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def equation_2(intersection: torch.Tensor, union: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mime's weights from Eq. 2: ``a = 2 (U − I)/U²`` (the gradient's size on the ground truth), ``b = 2 I/U²``."""
    return 2 * (union - intersection) / union**2, 2 * intersection / union**2


def batch_sums(probs: torch.Tensor, labels: torch.Tensor, include_background: bool = True) -> tuple[torch.Tensor, ...]:
    """``(I, P, G)`` per image and class, ``(B, K')`` float64, from probabilities and a ``(B, 1, ...)`` label map."""
    y = F.one_hot(labels[:, 0].long(), probs.shape[1]).movedim(-1, 1).double()
    s = probs.detach().double()
    sums = tuple(t.flatten(2).sum(-1) for t in (y * s, s, y))
    return sums if include_background else tuple(t[:, 1:] for t in sums)


class Eq2Reference:
    """The weights AdaptiveMimeLoss should have, from starting ``a``, ``b`` that hold at ``voxels`` voxels."""

    def __init__(
        self, a: Sequence[float] | torch.Tensor, b: Sequence[float] | torch.Tensor, voxels: int, momentum: float
    ):
        a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        union = 2 / (a + b)
        self.intersection, self.union = b * union**2 / 2 / voxels, union / voxels
        self.momentum = momentum

    def observe(self, probs: torch.Tensor, labels: torch.Tensor, include_background: bool = True) -> None:
        """One training step on a batch: fold its mean per-image sums, per voxel, into the averages."""
        i, p, g = batch_sums(probs, labels, include_background)
        voxels = labels[0, 0].numel()
        m = self.momentum
        self.intersection = m * self.intersection + (1 - m) * (i / voxels).mean(0)
        self.union = m * self.union + (1 - m) * ((p + g) / voxels).mean(0)

    def weights_at(self, voxels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 2 at the averages, the intersection capped at ``U/2`` (real sums have ``I ≤ min(G, P) ≤ U/2``; starting
        weights with ``a < b`` put the starting point above it)."""
        union = self.union * voxels
        return equation_2(torch.minimum(self.intersection * voxels, union / 2), union)
