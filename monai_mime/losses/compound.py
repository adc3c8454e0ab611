"""Any loss plus cross-entropy, ``L = λ_overlap · loss + λ_ce · CE`` (``monai.losses.DiceCELoss`` for every loss).

:class:`CompoundCELoss` wraps any loss module. When the wrapped loss is a :class:`~monai_mime.losses.base.ClassSumLoss`
on a label map with softmax, the sums ``(I, P, G)`` and the cross-entropy come out of one pass over the logits
(:mod:`monai_mime.losses.fused_ce`); otherwise (sigmoid, one-hot or soft targets, ``other_act``, CE class weights, a
loss of another kind) the two terms are computed apart (:func:`~monai_mime.losses.ce.cross_entropy_term`). Both
paths give the same value and gradient. The named compounds (:class:`SoftDiceCELoss`, :class:`MimeCELoss`…) are
this class around a loss built from the same arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from monai_mime.losses.adaptive_mime import AdaptiveMimeLoss
from monai_mime.losses.base import ClassSumLoss, as_class_weight
from monai_mime.losses.ce import cross_entropy_term
from monai_mime.losses.dice import GeneralizedSoftDiceLoss, SoftDiceLoss, VNetDiceLoss
from monai_mime.losses.fused_ce import can_fuse, class_sums_and_cross_entropy
from monai_mime.losses.mime import MimeLoss, Weights

if TYPE_CHECKING:
    from monai_mime.stats import ClassStatistics

COMPOUND_ARGUMENTS = ("lambda_overlap", "lambda_dice", "lambda_ce", "weight", "label_smoothing")


def split_compound_arguments(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``kwargs`` split into the compound's own arguments (:data:`COMPOUND_ARGUMENTS`) and the wrapped loss's."""
    own = {key: value for key, value in kwargs.items() if key in COMPOUND_ARGUMENTS}
    return own, {key: value for key, value in kwargs.items() if key not in COMPOUND_ARGUMENTS}


class CompoundCELoss(nn.Module):
    """``λ_overlap · loss(input, target, mask) + λ_ce · CE(input, target)``, MONAI's ``DiceCELoss`` for any loss.

    The cross-entropy follows ``monai.losses.DiceCELoss``: on the logits whatever the loss's activation, over a
    label map ``(B, 1, *spatial)`` or class probabilities ``(B, K, *spatial)``, binary for one channel; reduced like
    the loss (``"mean"``: over the voxels; ``"sum"``; ``"none"`` is refused, as by MONAI). The loss's
    ``ignore_index`` and the ``mask`` leave voxels out of both terms; the mean is over the voxels left (0 if none,
    nnU-Net's rule). ``include_background`` acts on the loss only.

    Args:
        loss: the overlap loss, a child module (its state, e.g. :class:`~monai_mime.AdaptiveMimeLoss`'s running
            averages, is in this module's ``state_dict`` under ``loss.``).
        lambda_overlap: weight of the loss (``λ_overlap ≥ 0``); ``lambda_dice`` is MONAI's name for it.
        lambda_ce: weight of the cross-entropy (``λ_ce ≥ 0``).
        weight: class weights of both terms, as MONAI's ``DiceCELoss``: the cross-entropy's, length ``K``
            (``pos_weight`` for one channel), and the loss's ``weight`` (see
            :class:`~monai_mime.losses.base.ClassSumLoss`), ``weight[1:]`` when it has ``include_background=False``.
            Cast to the logits' dtype and device at each call. The loss must be a
            :class:`~monai_mime.losses.base.ClassSumLoss` without a weight of its own.
        label_smoothing: PyTorch's ``label_smoothing`` of the cross-entropy.
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        loss: nn.Module,
        *,
        lambda_overlap: float = 1.0,
        lambda_ce: float = 1.0,
        lambda_dice: float | None = None,
        weight: Sequence[float] | float | np.ndarray | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if lambda_dice is not None:
            if lambda_overlap != 1.0:
                raise ValueError("pass lambda_overlap or its alias lambda_dice, not both.")
            lambda_overlap = lambda_dice
        if lambda_overlap < 0 or lambda_ce < 0:
            raise ValueError(f"lambda_overlap and lambda_ce must be >= 0, got {lambda_overlap} and {lambda_ce}.")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}.")
        reduction = getattr(loss, "reduction", "mean")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"a compound loss reduces with 'mean' or 'sum'; the loss has reduction={reduction!r}.")
        self.loss = loss
        self.lambda_overlap = float(lambda_overlap)
        self.lambda_ce = float(lambda_ce)
        self.label_smoothing = float(label_smoothing)
        self.reduction: str = reduction
        class_weight = None if weight is None else _weight_both_terms(loss, weight)
        self.register_buffer("weight", class_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The compound loss of ``input`` logits ``(B, K, *spatial)`` against ``target`` (see the class docstring)."""
        loss = self.loss
        if self.lambda_ce == 0:
            return self.lambda_overlap * self._overlap(input, target, mask)
        if self.lambda_overlap != 0 and self.fused(input, target):
            assert isinstance(loss, ClassSumLoss)
            sums, ce = class_sums_and_cross_entropy(
                loss, input, target, mask, self.label_smoothing, "sum" if self.reduction == "sum" else "mean"
            )
            overlap = loss.loss_from_sums(sums, num_voxels=math.prod(input.shape[2:]))
            return self.lambda_overlap * overlap + self.lambda_ce * ce
        ce = cross_entropy_term(
            input,
            target,
            weight=self.weight,
            label_smoothing=self.label_smoothing,
            ignore_index=getattr(loss, "ignore_index", None),
            mask=mask,
            reduction=self.reduction,
        )
        if self.lambda_overlap == 0:
            return self.lambda_ce * ce
        return self.lambda_overlap * self._overlap(input, target, mask) + self.lambda_ce * ce

    def fused(self, input: torch.Tensor, target: torch.Tensor) -> bool:
        """Whether :meth:`forward` takes the one-pass path for these inputs (see the module docstring)."""
        return isinstance(self.loss, ClassSumLoss) and self.weight is None and can_fuse(self.loss, input, target)

    def _overlap(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.loss(input, target) if mask is None else self.loss(input, target, mask=mask)

    def extra_repr(self) -> str:
        weighted = "" if self.weight is None else f", weight={self.weight.tolist()}"
        return (
            f"lambda_overlap={self.lambda_overlap}, lambda_ce={self.lambda_ce}, "
            f"label_smoothing={self.label_smoothing}{weighted}"
        )


def _weight_both_terms(loss: nn.Module, weight: Sequence[float] | float | np.ndarray | torch.Tensor) -> torch.Tensor:
    """``weight`` checked as one value per class; ``loss``'s own weight set from it (MONAI's ``DiceCELoss`` rule)."""
    class_weight = as_class_weight(weight)
    if class_weight.ndim != 1:
        raise ValueError("a compound's weight holds one value per class (length K), as MONAI's DiceCELoss.")
    if not isinstance(loss, ClassSumLoss):
        raise ValueError(
            f"weight weights the classes of both terms (MONAI's DiceCELoss), but {type(loss).__name__} is not a "
            "ClassSumLoss whose classes this package can weight."
        )
    if loss.class_weight is not None:
        raise ValueError("the loss has a weight of its own; pass weight to the compound only (it weights both terms).")
    loss.class_weight = class_weight if loss.include_background else class_weight[1:]
    return class_weight


class _NamedCompound(CompoundCELoss):
    """:class:`CompoundCELoss` around ``loss_class(**loss_kwargs)``: the compound's own arguments are explicit, the
    others go to the loss."""

    loss_class: ClassVar[type[ClassSumLoss]]

    def __init__(
        self,
        *,
        lambda_overlap: float = 1.0,
        lambda_ce: float = 1.0,
        lambda_dice: float | None = None,
        weight: Sequence[float] | float | np.ndarray | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        **loss_kwargs: Any,
    ) -> None:
        super().__init__(
            self.loss_class(**loss_kwargs),
            lambda_overlap=lambda_overlap,
            lambda_ce=lambda_ce,
            lambda_dice=lambda_dice,
            weight=weight,
            label_smoothing=label_smoothing,
        )


_Compound = TypeVar("_Compound", bound="_MimeCompound")


class _MimeCompound(_NamedCompound):
    """A named compound around a Mime loss: ``a``, ``b`` as the loss's, or :meth:`from_statistics`."""

    loss_class: ClassVar[type[MimeLoss]]

    def __init__(self, a: Weights, b: Weights, **kwargs: Any) -> None:
        super().__init__(a=a, b=b, **kwargs)

    @classmethod
    def from_statistics(cls: type[_Compound], stats: ClassStatistics, **kwargs: Any) -> _Compound:
        """The compound around ``loss_class.from_statistics(stats, **loss_kwargs)`` (a/b from dataset statistics);
        the compound's own arguments (:data:`COMPOUND_ARGUMENTS`) are split off ``kwargs``."""
        own, rest = split_compound_arguments(kwargs)
        compound = cls.__new__(cls)
        CompoundCELoss.__init__(compound, cls.loss_class.from_statistics(stats, **rest), **own)
        return compound


class SoftDiceCELoss(_NamedCompound):
    """:class:`~monai_mime.SoftDiceLoss` + cross-entropy; with MONAI's defaults ``monai.losses.DiceCELoss``.

    ``SoftDiceCELoss(lambda_ce=1.0, ..., softmax=True, to_onehot_y=True, ...)``: the arguments of
    :class:`CompoundCELoss` by keyword, the others :class:`~monai_mime.SoftDiceLoss`'s."""

    loss_class = SoftDiceLoss


class VNetCELoss(_NamedCompound):
    """:class:`~monai_mime.VNetDiceLoss` + cross-entropy (arguments as :class:`SoftDiceCELoss`)."""

    loss_class = VNetDiceLoss


class GDLCELoss(_NamedCompound):
    """:class:`~monai_mime.GeneralizedSoftDiceLoss` + cross-entropy (arguments as :class:`SoftDiceCELoss`)."""

    loss_class = GeneralizedSoftDiceLoss


class MimeCELoss(_MimeCompound):
    """:class:`~monai_mime.MimeLoss` + cross-entropy: ``MimeCELoss(a, b, lambda_ce=1.0, softmax=True, ...)``."""

    loss_class = MimeLoss


class AdaptiveMimeCELoss(_MimeCompound):
    """:class:`~monai_mime.AdaptiveMimeLoss` + cross-entropy; the running averages move as in the loss alone."""

    loss_class = AdaptiveMimeLoss
