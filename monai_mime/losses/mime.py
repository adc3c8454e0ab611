"""The Mime loss (Kervadec & de Bruijne, MIDL 2023), Eq. 3.

``L = Σ_{k,i} ω[k,i] · s[k,i]`` with ``ω = −a_k`` where ``y = 1`` and ``+b_k`` where ``y = 0``: a fixed linear map
that imitates the two-valued gradient of the soft Dice loss (Eq. 2) without ever dividing. Over the sums of
:mod:`monai_mime.losses.sums` it reads, per image and class, ``b_k (P_k − I_k) − a_k I_k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from monai_mime.losses.base import ClassSumLoss
from monai_mime.losses.sums import ClassSums

if TYPE_CHECKING:
    from monai_mime.stats import ClassStatistics


def _as_weight_vector(name: str, value: Sequence[float] | np.ndarray | torch.Tensor) -> torch.Tensor:
    vector = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if vector.ndim != 1 or vector.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence of per-class weights, got shape {tuple(vector.shape)}."
        )
    if not torch.isfinite(vector).all() or (vector <= 0).any():
        raise ValueError(f"{name} must hold finite positive weights, got {vector.tolist()}.")
    return vector


class MimeLoss(ClassSumLoss):
    """Mime loss, Eq. 3: ``L = Σ_{b,k,i} ω s`` with ``ω = −a_k`` on the ground truth of class k, ``+b_k`` elsewhere.

    The gradient with respect to the probabilities is exactly ``ω``: constant, bounded, and well defined on empty
    patches, where every Dice variant divides by (almost) zero. Per image and class the term is
    ``b_k (P_k − I_k) − a_k I_k``; it is negative when the prediction covers the ground truth.

    Args:
        a: per-class weight on the ground truth, length ``K`` (or ``K − 1`` with ``include_background=False``,
            as MONAI's ``weight``); positive.
        b: per-class weight off the ground truth, same length; positive. Both are buffers: they follow
            ``.to(device)`` and are saved in the ``state_dict``.
        **kwargs: the shared arguments of :class:`~monai_mime.losses.base.ClassSumLoss`.

    Reductions: ``"sum"`` is ``Σ_{b,k,i} ω s`` exactly; ``"mean"`` is that sum divided by the number of
    (image, class) terms ``B·K'`` (``K'`` with ``batch=True``), so that it does not grow with the batch size;
    ``"none"`` returns the ``(B, K', 1, …)`` terms.

    A voxel takes class k rather than background once ``a_k q > b_k (1 − q)`` roughly, i.e. at a predicted
    probability ``q > b_k / (a_k + b_k)``: the ratio ``a/b`` sets the operating point (see
    :meth:`monai_mime.ClassStatistics.thresholds`).

    Example:
        >>> import torch
        >>> loss = MimeLoss(a=[1.0, 40.0, 80.0], b=[1.0, 1.0, 1.0], softmax=True, to_onehot_y=True)
        >>> logits = torch.randn(2, 3, 16, 16, requires_grad=True)
        >>> loss(logits, torch.randint(0, 3, (2, 1, 16, 16))).backward()
    """

    a: torch.Tensor
    b: torch.Tensor

    def __init__(
        self,
        a: Sequence[float] | np.ndarray | torch.Tensor,
        b: Sequence[float] | np.ndarray | torch.Tensor,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        a_vector, b_vector = _as_weight_vector("a", a), _as_weight_vector("b", b)
        if a_vector.shape != b_vector.shape:
            raise ValueError(f"a and b must have the same length, got {a_vector.numel()} and {b_vector.numel()}.")
        self.register_buffer("a", a_vector)
        self.register_buffer("b", b_vector)

    @classmethod
    def from_statistics(
        cls,
        stats: ClassStatistics,
        mode: str | None = None,
        patch_size: Sequence[int] | None = None,
        include_background: bool = True,
        weight_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> MimeLoss:
        """Build the loss from dataset statistics: ``a, b = stats.weights(mode, patch_size, **weight_kwargs)``.

        ``mode=None`` takes the default of :meth:`ClassStatistics.weights`. The background entry is dropped when
        ``include_background=False``. ``kwargs`` go to the constructor (``softmax=True``, ``to_onehot_y=True``...).
        """
        weight_args: dict[str, Any] = dict(weight_kwargs or {})
        if mode is not None:
            weight_args["mode"] = mode
        a, b = stats.weights(patch_size=patch_size, **weight_args)
        if not include_background:
            a, b = a[1:], b[1:]
        return cls(a, b, include_background=include_background, **kwargs)

    def formula(self, sums: ClassSums) -> torch.Tensor:
        intersection, prediction, _ = sums
        if intersection.shape[-1] != self.a.numel():
            raise ValueError(
                f"MimeLoss has a/b for {self.a.numel()} classes but the loss sees {intersection.shape[-1]} "
                f"(include_background={self.include_background}); give a/b of that length."
            )
        return self.b * (prediction - intersection) - self.a * intersection

    def extra_repr(self) -> str:
        return f"a={self.a.tolist()}, b={self.b.tolist()}, " + super().extra_repr()


class AdaptiveMimeLoss(MimeLoss):
    """Mime whose a/b follow the soft-Dice gradient (Eq. 2) at a running, dataset-level operating point.

    Eq. 2 gives the Dice gradient's two values per image and class, ``−2 (U − I)/U²`` on the ground truth and
    ``2 I/U²`` elsewhere (``U = G + P``). This loss keeps exponential moving averages ``Ī_k, Ū_k`` of the per-image
    sums over the training batches and uses

        ``a_k = 2 (Ū_k − Ī_k) / Ū_k²``,   ``b_k = 2 Ī_k / Ū_k²``   (Eq. 2 at the running averages),

    in the linear map of Eq. 3. Each step is still Mime — linear in the probabilities, no division by a patch's own
    (possibly zero) sums — but the ratio ``a/b = (Ū − Ī)/Ī`` moves as the Dice gradient's does: large while the
    prediction misses a class (a starved class is pulled back), near 1 once it overlaps (no over-segmentation).

    Args:
        a, b: the starting weights, e.g. from :meth:`ClassStatistics.weights`. They fix the starting operating point
            ``Ū = 2/(a + b)``, ``Ī = 2 b/(a + b)²`` (the inverse of the two formulas above).
        momentum: weight of the old average per training step (0.99: a horizon of about 100 steps); 1 freezes the
            weights, which makes the loss plain :class:`MimeLoss`.
        min_union: floor for ``Ū`` in voxels, so that a class missing from many consecutive batches cannot blow
            ``a`` up.
        **kwargs: as :class:`MimeLoss`.

    Under deep supervision (nnU-Net) every output scale calls the loss, and all scales share one set of averages.
    The averages move only on training steps — in training mode and with gradients enabled, so a validation loss
    computed under ``torch.no_grad()`` (nnU-Net's) leaves them alone — and live in the ``state_dict`` (buffers
    ``running_intersection``, ``running_union``), so a checkpoint of the loss resumes with the weights it had.
    """

    running_intersection: torch.Tensor
    running_union: torch.Tensor

    def __init__(
        self,
        a: Sequence[float] | np.ndarray | torch.Tensor,
        b: Sequence[float] | np.ndarray | torch.Tensor,
        momentum: float = 0.99,
        min_union: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(a, b, **kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}.")
        self.momentum = float(momentum)
        self.min_union = float(min_union)
        union = 2 / (self.a + self.b)
        self.register_buffer("running_union", union)
        self.register_buffer("running_intersection", self.b * union**2 / 2)

    @torch.no_grad()
    def observe(self, sums: ClassSums) -> None:
        """Fold a batch's per-image sums ``(B, K')`` into the running averages and recompute ``a``, ``b``."""
        intersection, prediction, ground_truth = (t.detach().float().mean(0) for t in sums)
        m = self.momentum
        self.running_intersection.mul_(m).add_(intersection, alpha=1 - m)
        self.running_union.mul_(m).add_(prediction + ground_truth, alpha=1 - m)
        union = self.running_union.clamp_min(self.min_union)
        intersection = torch.minimum(self.running_intersection, union / 2)  # I ≤ min(G, P) ≤ U/2
        # new tensors, not in-place updates: a graph built earlier in this step (deep supervision calls the loss
        # once per output scale) still holds the old a/b for its backward pass
        self.a = 2 * (union - intersection) / union**2
        self.b = (2 * intersection / union**2).clamp_min(torch.finfo(torch.float32).tiny)

    def loss_from_sums(self, sums: ClassSums, num_voxels: int | None = None) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and self.momentum < 1.0:
            self.observe(sums)
        return super().loss_from_sums(sums, num_voxels)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, " + super().extra_repr()
