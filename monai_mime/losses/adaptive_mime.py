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

from monai_mime.losses.mime import MimeLoss, mime_terms
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
    ``initial_a``, ``initial_b`` (the constructor's starting weights at ``N₀``, never changed),
    ``running_intersection`` (``ī``), ``running_union`` (``ū``), ``min_running_union`` (its floor
    ``min_union_share · ū₀``) and ``reference_voxels`` (``N₀``; 0 until known). A ``state_dict`` written before these
    names (keys ``a``, ``b``: the weights of its last call) is converted on load; see :meth:`_load_from_state_dict`.

    :meth:`weights_at` gives the weights at any voxel count. The read-only :attr:`a`, :attr:`b` are those of the last
    call, at its voxel count (under deep supervision the last output's), and ``initial_a``, ``initial_b`` before this
    instance's first call (also after loading a ``state_dict``: ask :meth:`weights_at` for the loaded weights).

    The averages move only on training steps — in training mode and with gradients enabled, so a validation loss
    computed under ``torch.no_grad()`` (nnU-Net's) leaves them alone. Every call needs ``num_voxels`` (``forward``
    passes it): without it the weights of the call's scale are unknown, and :meth:`loss_from_sums` raises. The
    averages are per image: with ``batch=True`` they still average the per-image sums handed to
    :meth:`loss_from_sums`.

    Limitation: a class present in few training patches is learned from above: an untrained network predicts it on
    about ``1/K`` of every voxel, the averages take that in within a few steps, and Eq. 2 then asks only that the
    prediction shrink. Where the network instead settles with the class confidently over-predicted, the loss, linear
    in the probabilities, has no gradient left there; adding cross-entropy (``"mime_adaptive+ce"``) gives one, and is
    the setting to use at small patches where a class is absent from most of them. The measurements are in
    ``docs/results/sweep.md`` and ``docs/results/dice_ce.md``.
    """

    initial_a: torch.Tensor
    initial_b: torch.Tensor
    running_intersection: torch.Tensor
    running_union: torch.Tensor
    min_running_union: torch.Tensor
    reference_voxels: torch.Tensor
    weight_buffers = ("initial_a", "initial_b")

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
        self._last_num_voxels: int | None = None
        self.register_buffer("running_union", torch.zeros_like(self.initial_a))
        self.register_buffer("running_intersection", torch.zeros_like(self.initial_a))
        self.register_buffer("min_running_union", torch.zeros_like(self.initial_a))
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
        return super().from_statistics(stats, mode, patch_size, include_background, weight_kwargs, **kwargs)

    @property
    def started(self) -> bool:
        """Whether the averages hold fractions (``reference_voxels`` is known)."""
        return bool(self.reference_voxels > 0)

    @torch.no_grad()
    def _start(self, num_voxels: int) -> None:
        """The starting fractions from the starting a/b, taken to hold at ``num_voxels`` voxels (inverse of Eq. 2)."""
        union = 2 / (self.initial_a + self.initial_b)
        self.running_union.copy_(union / num_voxels)
        self.min_running_union.copy_(self.min_union_share * union / num_voxels)
        self.running_intersection.copy_(self.initial_b * union**2 / 2 / num_voxels)
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

    def _last_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._last_num_voxels is None:
            return self.initial_a, self.initial_b
        return self.weights_at(self._last_num_voxels)

    @property
    def a(self) -> torch.Tensor:
        """Weight on the ground truth of the last call, at its voxel count (``initial_a`` before this instance's first
        call); read-only."""
        return self._last_weights()[0]

    @a.setter
    def a(self, value: torch.Tensor) -> None:
        raise AttributeError("AdaptiveMimeLoss.a is read-only: set initial_a, or the running averages.")

    @property
    def b(self) -> torch.Tensor:
        """Weight off the ground truth of the last call, at its voxel count (``initial_b`` before this instance's first
        call); read-only."""
        return self._last_weights()[1]

    @b.setter
    def b(self, value: torch.Tensor) -> None:
        raise AttributeError("AdaptiveMimeLoss.b is read-only: set initial_b, or the running averages.")

    def loss_from_sums(self, sums: ClassSums, num_voxels: int | None = None) -> torch.Tensor:
        """Update the averages (training steps), then Eq. 3 with the weights :meth:`weights_at` ``num_voxels``."""
        if num_voxels is None:
            raise ValueError(
                "AdaptiveMimeLoss.loss_from_sums needs num_voxels (one image's spatial voxel count): its running "
                "averages are per voxel and its a/b depend on the size of the output."
            )
        seen = sums.intersection.shape[-1]
        if seen != self.initial_a.numel():
            raise ValueError(
                f"AdaptiveMimeLoss has a/b for {self.initial_a.numel()} classes but the loss sees {seen} "
                f"(include_background={self.include_background}); give a/b of that length."
            )
        if not self.started:
            self._start(num_voxels)
        if self.training and torch.is_grad_enabled() and self.momentum < 1.0:
            self.observe(sums, num_voxels)
        self._last_num_voxels = num_voxels
        # new tensors: a graph built earlier in this step (deep supervision calls the loss once per output scale)
        # holds its own a/b for its backward pass, which later updates of the averages leave alone
        a, b = self.weights_at(num_voxels)
        return self.reduce(self.weighted(mime_terms(self.batched(sums), a, b, self.include_background)))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Loads ``state_dict``s of either layout. One written before ``initial_a``/``initial_b`` existed holds ``a``,
        ``b``: the starting weights if the loss had not been called (``reference_voxels`` 0), else the weights of its
        last call, which the running averages it also holds determine. They become ``initial_a``/``initial_b`` in
        the first case and are dropped in the second (the starting weights then stay this instance's: once started,
        the loss no longer reads them)."""
        if prefix + "a" in state_dict and prefix + "initial_a" not in state_dict:
            old_a, old_b = state_dict.pop(prefix + "a"), state_dict.pop(prefix + "b")
            reference = state_dict.get(prefix + "reference_voxels")
            started = reference is not None and float(reference) > 0
            state_dict[prefix + "initial_a"] = self.initial_a if started else old_a
            state_dict[prefix + "initial_b"] = self.initial_b if started else old_b
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"momentum={self.momentum}, min_union_share={self.min_union_share}, "
            f"reference_voxels={int(self.reference_voxels)}, " + super().extra_repr()
        )
