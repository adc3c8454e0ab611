"""Soft Dice (Eq. 1), V-Net Dice (Eq. 5) and Generalized Dice (Eq. 4) as formulas over ``(I, P, G)``.

Equation numbers refer to Kervadec & de Bruijne, "On the dice loss variants and sub-patching" (MIDL 2023), as
collected in ``docs/equations.md``. With every class present they agree with ``monai.losses.DiceLoss``,
``DiceLoss(squared_pred=True)`` and ``GeneralizedDiceLoss`` to float32 tolerance (tested); the one deliberate
difference is documented on :class:`GeneralizedSoftDiceLoss`.
"""

from __future__ import annotations

from typing import Any

import torch

from monai_mime.losses.base import ClassSumLoss
from monai_mime.losses.sums import ClassSums


class SoftDiceLoss(ClassSumLoss):
    """Soft Dice loss, Eq. 1: ``L = 1 − (2 I + smooth_nr) / (G + P + smooth_dr)`` per image and class.

    Its gradient with respect to the probabilities (Eq. 2, ``U = G + P``) takes two values per image and class:
    ``−2 (U − I) / U²`` on the ground truth and ``2 I / U²`` elsewhere.

    ``weight`` (MONAI's ``DiceLoss(weight=...)``, see :class:`~monai_mime.losses.base.ClassSumLoss`) multiplies the
    term of each class.

    Args:
        smooth_nr: added to the numerator (MONAI's default 1e-5). An absent class (``G = 0``) then scores
            ``1 − smooth_nr / (P + smooth_dr)``: 0 when nothing is predicted, close to 1 otherwise; finite always.
        smooth_dr: added to the denominator, keeps an empty patch with an empty prediction finite.
        **kwargs: the shared arguments of :class:`~monai_mime.losses.base.ClassSumLoss`.

    Example:
        >>> import torch
        >>> loss = SoftDiceLoss(softmax=True, to_onehot_y=True)
        >>> logits = torch.randn(2, 3, 16, 16, requires_grad=True)
        >>> labels = torch.randint(0, 3, (2, 1, 16, 16))
        >>> loss(logits, labels).backward()
    """

    def __init__(self, *, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)

    def formula(self, sums: ClassSums) -> torch.Tensor:
        intersection, prediction, ground_truth = sums
        return 1 - (2 * intersection + self.smooth_nr) / (ground_truth + prediction + self.smooth_dr)


class VNetDiceLoss(SoftDiceLoss):
    """V-Net Dice loss (Milletari et al. 2016), Eq. 5: Eq. 1 with ``P = Σ_i s²`` in the denominator.

    Same arguments as :class:`SoftDiceLoss`; equals ``monai.losses.DiceLoss(squared_pred=True)`` on hard labels,
    ``weight`` included.
    """

    squared = True


def _class_weights(ground_truth: torch.Tensor, w_type: str) -> torch.Tensor:
    """Sudre et al.'s weights ``w_k = 1/G_k²`` ("square"), ``1/G_k`` ("simple") or 1 ("uniform"), with absent classes
    (``G_k = 0``) given the largest finite weight over the last dimension — MONAI's rule — and weight 1 for all
    classes where every class is absent (see :class:`GeneralizedSoftDiceLoss`)."""
    if w_type == "uniform":
        return torch.ones_like(ground_truth)
    power = 2 if w_type == "square" else 1
    present = ground_truth > 0
    weights = torch.where(present, ground_truth.clamp_min(1e-12) ** -power, torch.zeros_like(ground_truth))
    largest = weights.amax(dim=-1, keepdim=True)
    largest = torch.where(largest > 0, largest, torch.ones_like(largest))
    return torch.where(present, weights, largest)


class GeneralizedSoftDiceLoss(SoftDiceLoss):
    """Generalized Dice loss (Sudre et al. 2017), Eq. 4, one term per image (or one for the batch with ``batch``):

        ``L = 1 − (2 Σ_k w_k I_k + smooth_nr) / (Σ_k w_k (G_k + P_k) + smooth_dr)``,   ``w_k = 1 / G_k²``.

    Args:
        w_type: ``"square"`` (``1/G²``, the paper's), ``"simple"`` (``1/G``) or ``"uniform"`` (1), as in MONAI.
        weight: a per-class factor on Sudre's weights, ``w_k = weight_k / G_k²`` (MONAI's ``GeneralizedDiceLoss``
            has no ``weight``; length and single-class rule as :class:`~monai_mime.losses.base.ClassSumLoss`).
        smooth_nr, smooth_dr, **kwargs: as :class:`SoftDiceLoss`.

    A class absent from the image makes ``w_k`` infinite. As MONAI, such a class gets the largest finite weight of
    the image (of the batch with ``batch=True``). Where *no* included class is present — an all-background patch
    with ``include_background=False`` — MONAI returns exactly 0 with a zero gradient, a perfect score whatever the
    network predicts. Here every class then gets weight 1, so the term is ``1 − smooth_nr / (Σ_k P_k + smooth_dr)``:
    0 for an empty prediction and a gradient that pushes predicted foreground down otherwise.
    """

    per_class_terms = False

    def __init__(self, *, w_type: str = "square", **kwargs: Any) -> None:
        if w_type not in ("square", "simple", "uniform"):
            raise ValueError(f"w_type must be 'square', 'simple' or 'uniform', got {w_type!r}.")
        super().__init__(**kwargs)
        self.w_type = w_type

    def formula(self, sums: ClassSums) -> torch.Tensor:
        intersection, prediction, ground_truth = sums
        weights = _class_weights(ground_truth, self.w_type)
        class_weight = self.class_weights(weights.shape[-1], weights)
        if class_weight is not None:
            weights = weights * class_weight
        numerator = 2 * (weights * intersection).sum(-1, keepdim=True) + self.smooth_nr
        denominator = (weights * (ground_truth + prediction)).sum(-1, keepdim=True) + self.smooth_dr
        return 1 - numerator / denominator
