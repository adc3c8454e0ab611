"""Mime (Eq. 3) whose a/b follow the soft-Dice gradient (Eq. 2) at running, per-voxel averages of the sums.

Eq. 2 gives the Dice gradient's two values per image and class, ``−2 (U − I)/U²`` on the ground truth and
``2 I/U²`` elsewhere (``U = G + P``). :class:`AdaptiveMimeLoss` keeps exponential moving averages of the per-image
sums *as fractions of one image's voxel count* ``N``, ``ī = avg(I/N)`` and ``ū = avg(U/N)``, and at a call on images
of ``N`` voxels uses Eq. 2 at ``Ī = ī N``, ``Ū = ū N``:

    ``a_k(N) = 2 (Ū_k − Ī_k) / Ū_k²``,   ``b_k(N) = 2 Ī_k / Ū_k²``,   i.e. ``a(N) = a(N₀) · N₀ / N``.

Because the averages are scale-free, one instance shared by every output of a deep-supervision pyramid (nnU-Net)
gives each output the weights Eq. 2 gives at that output's own size; on a single scale the weights are those of
running averages kept in voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import distributed as dist

from monai_mime.losses.mime import MimeLoss
from monai_mime.losses.sums import ClassSums

if TYPE_CHECKING:
    from monai_mime.stats import ClassStatistics


class AdaptiveMimeLoss(MimeLoss):
    """Mime whose a/b follow the soft-Dice gradient (Eq. 2) at a running, dataset-level operating point.

    Each step is still Mime — linear in the probabilities, no division by a patch's own (possibly zero) sums — but the
    ratio ``a/b = (Ū − Ī)/Ī`` moves as the Dice gradient's does: large while the prediction misses a class (a starved
    class is pulled back), near 1 once it overlaps (no over-segmentation). See the module docstring for the formulas.

    Args:
        a, b: the starting weights at ``reference_voxels`` voxels per image, e.g. from
            :meth:`ClassStatistics.weights` at the patch size. They fix the starting operating point
            ``Ū = 2/(a + b)``, ``Ī = 2 b/(a + b)²`` (the inverse of Eq. 2), hence the starting fractions ``Ū/N₀``,
            ``Ī/N₀``.
        momentum: weight of the old average per training step (0.99: a horizon of about 100 steps); 1 freezes the
            averages (at a single scale the loss is then plain :class:`MimeLoss`; at another scale its a/b are
            rescaled by ``N₀/N``).
        min_union_share: floor for the running union as a share of its starting value, ``ū ≥ min_union_share · ū₀``
            (in ``(0, 1]``), so that a class missing from many consecutive batches cannot blow ``a`` up: ``a`` stays
            below ``2/(min_union_share · Ū₀)``. Being a share of a per-voxel average, the floor means the same at every
            output size, and it lies below the starting point, so the starting a/b are Eq. 2's. (A floor in voxels at
            the call's size would bind on small patches of rare classes, whose mean union is below one voxel there.)
        reference_voxels: ``N₀``, the spatial voxel count of one image at which ``a``, ``b`` hold (the patch size
            they were computed for). ``None``: the voxel count of the first call (in nnU-Net, the full-resolution
            output). :meth:`from_statistics` sets it from ``patch_size``.
        sync_ranks: when ``torch.distributed`` is initialised, average each training step's batch sums over all
            ranks (one ``all_reduce`` of ``2K' + 1`` floats) before they update the averages, so that every rank holds
            the same averages and a/b. Every rank must then call the loss the same number of times in training mode
            with gradients enabled (as DDP training does).
        **kwargs: as :class:`MimeLoss`; a class ``weight`` multiplies ``ω`` after a/b are set from the averages,
            which it leaves alone.

    Buffers (all in the ``state_dict``, so a checkpoint of the loss resumes with the weights it had):
    ``running_intersection`` (``ī``), ``running_union`` (``ū``), ``min_running_union`` (its floor
    ``min_union_share · ū₀``), ``reference_voxels`` (``N₀``; 0 until known), and
    ``a``, ``b``: the weights of the last call, at that call's voxel count (the starting weights before the first
    call). :meth:`weights_at` gives them at any voxel count.

    The averages move only on training steps — in training mode and with gradients enabled, so a validation loss
    computed under ``torch.no_grad()`` (nnU-Net's) leaves them alone. Every call needs ``num_voxels`` (``forward``
    passes it): without it the weights of the call's scale are unknown, and :meth:`loss_from_sums` raises. The
    averages are per image: with ``batch=True`` they still average the per-image sums handed to
    :meth:`loss_from_sums`.

    Limitation (measured, ``docs/results/sweep.md``): a class present in under 2 % of the training patches is learned
    from above: an untrained network predicts it on about ``1/K`` of every voxel, the averages take that in within a
    few steps, and Eq. 2 then asks only that the prediction shrink. Where the network instead settles with the class
    confidently over-predicted, the loss, linear in the probabilities, has no gradient left there (on the built-in
    data, 3 of 6 seeds at 32² and 2 of 6 at 16² patches: 100–450× the true volume). Adding cross-entropy
    (``"mime_adaptive+ce"``) avoided it in all 6 seeds at both sizes; it found the class in 4 of 6 at 32², none at 16².
    """

    running_intersection: torch.Tensor
    running_union: torch.Tensor
    min_running_union: torch.Tensor
    reference_voxels: torch.Tensor

    def __init__(
        self,
        a: Sequence[float] | np.ndarray | torch.Tensor,
        b: Sequence[float] | np.ndarray | torch.Tensor,
        momentum: float = 0.99,
        min_union_share: float = 0.1,
        reference_voxels: int | None = None,
        sync_ranks: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(a, b, **kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}.")
        if not 0.0 < min_union_share <= 1.0:
            raise ValueError(f"min_union_share must lie in (0, 1], got {min_union_share}.")
        if reference_voxels is not None and reference_voxels < 1:
            raise ValueError(f"reference_voxels must be a positive voxel count or None, got {reference_voxels}.")
        self.momentum = float(momentum)
        self.min_union_share = float(min_union_share)
        self.sync_ranks = bool(sync_ranks)
        self.register_buffer("running_union", torch.zeros_like(self.a))
        self.register_buffer("running_intersection", torch.zeros_like(self.a))
        self.register_buffer("min_running_union", torch.zeros_like(self.a))
        self.register_buffer("reference_voxels", torch.zeros((), dtype=torch.float64))
        if reference_voxels is not None:
            self._start(reference_voxels)

    @classmethod
    def from_statistics(
        cls,
        stats: ClassStatistics,
        mode: str | None = None,
        patch_size: Sequence[int] | None = None,
        include_background: bool = True,
        weight_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AdaptiveMimeLoss:
        """:meth:`MimeLoss.from_statistics`; with ``patch_size``, ``reference_voxels`` defaults to its product."""
        if patch_size is not None:
            kwargs.setdefault("reference_voxels", math.prod(int(p) for p in patch_size))
        loss = super().from_statistics(stats, mode, patch_size, include_background, weight_kwargs, **kwargs)
        assert isinstance(loss, AdaptiveMimeLoss)
        return loss

    @property
    def started(self) -> bool:
        """Whether the averages hold fractions (``reference_voxels`` is known)."""
        return bool(self.reference_voxels > 0)

    @torch.no_grad()
    def _start(self, num_voxels: int) -> None:
        """The starting fractions from the current (starting) a/b, taken to hold at ``num_voxels`` voxels."""
        union = 2 / (self.a + self.b)
        self.running_union.copy_(union / num_voxels)
        self.min_running_union.copy_(self.min_union_share * union / num_voxels)
        self.running_intersection.copy_(self.b * union**2 / 2 / num_voxels)
        self.reference_voxels.fill_(float(num_voxels))

    @torch.no_grad()
    def weights_at(self, num_voxels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` of Eq. 2 at the running averages for images of ``num_voxels`` spatial voxels."""
        if not self.started:
            raise RuntimeError(
                "AdaptiveMimeLoss: the voxel count of the starting a/b is not known yet; pass reference_voxels or "
                "call the loss once."
            )
        union = torch.maximum(self.running_union, self.min_running_union) * num_voxels
        intersection = torch.minimum(self.running_intersection * num_voxels, union / 2)  # I ≤ min(G, P) ≤ U/2
        a = 2 * (union - intersection) / union**2
        b = (2 * intersection / union**2).clamp_min(torch.finfo(torch.float32).tiny)
        return a, b

    @torch.no_grad()
    def observe(self, sums: ClassSums, num_voxels: int) -> None:
        """Fold a batch's per-image sums ``(B, K')`` into the running averages (averaged over ranks under DDP)."""
        # plain tensors: sums of a batched MONAI MetaTensor carry per-image metadata that .sum(0) refuses to merge
        i, p, g = (t.detach().float().as_subclass(torch.Tensor) for t in sums)
        intersection = i / num_voxels
        union = (p + g) / num_voxels
        totals = torch.cat([intersection.sum(0), union.sum(0), intersection.new_full((1,), intersection.shape[0])])
        if self.sync_ranks and dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        num_classes = intersection.shape[1]
        count = totals[-1]
        m = self.momentum
        self.running_intersection.mul_(m).add_(totals[:num_classes] / count, alpha=1 - m)
        self.running_union.mul_(m).add_(totals[num_classes : 2 * num_classes] / count, alpha=1 - m)

    def loss_from_sums(self, sums: ClassSums, num_voxels: int | None = None) -> torch.Tensor:
        """Update the averages (training steps), set ``a``, ``b`` to :meth:`weights_at` ``num_voxels``, then Eq. 3."""
        if num_voxels is None:
            raise ValueError(
                "AdaptiveMimeLoss.loss_from_sums needs num_voxels (one image's spatial voxel count): its running "
                "averages are per voxel and its a/b depend on the size of the output."
            )
        seen = sums.intersection.shape[-1]
        if seen != self.a.numel():
            raise ValueError(
                f"AdaptiveMimeLoss has a/b for {self.a.numel()} classes but the loss sees {seen} "
                f"(include_background={self.include_background}); give a/b of that length."
            )
        if not self.started:
            self._start(num_voxels)
        if self.training and torch.is_grad_enabled() and self.momentum < 1.0:
            self.observe(sums, num_voxels)
        # new tensors, not in-place updates: a graph built earlier in this step (deep supervision calls the loss
        # once per output scale) still holds its own a/b for its backward pass
        self.a, self.b = self.weights_at(num_voxels)
        return super().loss_from_sums(sums, num_voxels)

    def extra_repr(self) -> str:
        return (
            f"momentum={self.momentum}, min_union_share={self.min_union_share}, "
            f"reference_voxels={int(self.reference_voxels)}, " + super().extra_repr()
        )
