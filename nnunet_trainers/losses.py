"""Adapters that plug the losses of :mod:`monai_mime` into nnU-Net v2's training loop.

nnU-Net hands its loss ``loss(output, target)`` where, for each deep-supervision scale,

* ``output`` is ``(B, C, *spatial)`` logits, ``C`` the number of segmentation heads;
* ``target`` is a **label map** ``(B, 1, *spatial)`` (softmax training; the ignore label, if any, is the value
  ``K`` = number of classes), or, in region-based training, ``(B, R, *spatial)`` region masks plus, with an ignore
  label, one last channel that marks the ignored voxels.

:class:`NnUNetLossAdapter` mirrors nnU-Net's own ``DC_and_CE_loss`` / ``DC_and_BCE_loss``
(``nnunetv2/training/loss/compound_losses.py``): the label map goes to the loss as a label map (``to_onehot_y=True``,
no one-hot is built), ignored voxels are passed as a ``mask`` (they take part in no sum), and the optional
cross-entropy term is nnU-Net's ``RobustCrossEntropyLoss`` (``BCEWithLogitsLoss`` for regions) with the same
weights and ignore handling. For label maps the cross-entropy is fused with the loss's sums into one pass over the
logits (:func:`monai_mime.losses.fused_ce.class_sums_and_cross_entropy`) whenever nnU-Net's semantics allow it — a
:class:`~monai_mime.losses.base.ClassSumLoss` with softmax and no CE class weights: ``RobustCrossEntropyLoss`` is the
mean over the voxels that are not ignored, and ``DC_and_CE_loss`` skips it when every voxel is ignored, which is the
fused term's 0. With ``batch_dice`` under DDP, the per-class sums ``(I, P, G)`` (``docs/equations.md``) are
all-gathered across ranks *with gradients* (nnU-Net's ``AllGatherGrad``) before the formula, as nnU-Net's
``MemoryEfficientSoftDiceLoss`` does: every rank then computes the loss of the global batch, and after DDP's gradient
averaging the gradients are those of the single-process loss on the concatenated batch.

:func:`deep_supervision_weights` reproduces nnU-Net's weights for the outputs of the decoder pyramid, and
:func:`wrap_deep_supervision` wraps a loss in nnU-Net's ``DeepSupervisionWrapper`` with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_mime.losses.base import ClassSumLoss
from monai_mime.losses.fused_ce import can_fuse, class_sums_and_cross_entropy

__all__ = [
    "NnUNetLossAdapter",
    "all_gather_batch_sums",
    "deep_supervision_weights",
    "wrap_deep_supervision",
]


def _ddp_active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_gather_batch_sums(sums: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Sum ``(I, P, G)`` over the local batch, then all-gather them across ranks, keeping the autograd graph.

    Each input is ``(B_local, K')``; each output is ``(world_size, K')``, row ``r`` holding rank ``r``'s batch sums.
    A loss with ``batch=True`` sums its inputs over dim 0 before the formula, so feeding it these rows gives exactly
    the batch-dice loss of the concatenated global batch, also when ranks hold different batch sizes (nnU-Net splits
    an odd global batch unevenly). The three tensors travel in one collective.

    The backward pass is nnU-Net's ``AllGatherGrad``: the upstream gradient is summed over ranks (all ranks compute
    the same loss) and each rank keeps the slice of its own sums. The gradient a rank sees is thus ``world_size``
    times the gradient of the global loss with respect to its inputs; DDP's averaging of parameter gradients divides
    it back, as in nnU-Net.

    Args:
        sums: ``(I, P, G)`` float tensors of identical shape ``(B_local, K')``.

    Returns:
        The gathered ``[I, P, G]``, each ``(world_size, K')`` float32.
    """
    from nnunetv2.utilities.ddp_allgather import AllGatherGrad

    local = torch.stack([t.float().sum(0) for t in sums])  # (3, K')
    gathered = AllGatherGrad.apply(local)  # (world_size, 3, K')
    return list(gathered.unbind(1))


class NnUNetLossAdapter(nn.Module):
    """One deep-supervision scale of an nnU-Net loss: a :mod:`monai_mime` loss, optional (B)CE, ignore label, DDP.

    Computes ``weight_dice * loss(output, target, mask) + weight_ce * ce(output, target)`` like nnU-Net's
    ``DC_and_CE_loss`` (label maps) and ``DC_and_BCE_loss`` (regions).

    Args:
        loss: a loss with the :mod:`monai_mime` contract (``forward(input, target, mask)``, ``class_sums``,
            ``loss_from_sums``, attribute ``batch``). For label maps it must be built with ``to_onehot_y=True`` and
            ``softmax=True``; for regions with ``to_onehot_y=False`` and ``sigmoid=True``.
        region_based: the target holds region masks ``(B, R[+1], ...)`` (nnU-Net region training), not a label map.
        ignore_label: nnU-Net's ignore label (``label_manager.ignore_label``) or ``None``. Label maps: voxels of that
            value are masked out (and given label 0 for the loss, which never sees them). Regions: the last target
            channel is the ignore mask and is removed.
        ddp: all-gather the sums across ranks when the loss uses ``batch`` (nnU-Net's ``ddp=self.is_ddp``). Has no
            effect unless ``torch.distributed`` is initialised.
        weight_dice: weight of the region/class-overlap loss (nnU-Net's ``weight_dice``, 1).
        weight_ce: weight of the cross-entropy term (nnU-Net's ``weight_ce``: 1 for the "CE" trainers, 0 for none).
        ce_kwargs: extra arguments for ``RobustCrossEntropyLoss`` / ``BCEWithLogitsLoss``. Label maps: without
            ``weight`` (``label_smoothing`` may be given) the cross-entropy is fused with the loss (:attr:`fuses_ce`).
    """

    def __init__(
        self,
        loss: nn.Module,
        *,
        region_based: bool = False,
        ignore_label: int | None = None,
        ddp: bool = False,
        weight_dice: float = 1.0,
        weight_ce: float = 0.0,
        ce_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not region_based and not getattr(loss, "to_onehot_y", True):
            raise ValueError("label-map training needs a loss built with to_onehot_y=True (nnU-Net passes label maps).")
        if region_based and getattr(loss, "to_onehot_y", False):
            raise ValueError(
                "region-based training needs a loss built with to_onehot_y=False (targets are region masks)."
            )
        self.loss: Any = loss  # the duck-typed contract above
        self.region_based = bool(region_based)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.ddp = bool(ddp)
        self.weight_dice = float(weight_dice)
        self.weight_ce = float(weight_ce)
        self.ce: nn.Module | None = None
        if self.weight_ce != 0:
            kwargs = dict(ce_kwargs or {})
            if self.region_based:
                if self.ignore_label is not None:
                    kwargs["reduction"] = "none"
                self.ce = nn.BCEWithLogitsLoss(**kwargs)
            else:
                from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss

                if self.ignore_label is not None:
                    kwargs["ignore_index"] = self.ignore_label
                self.ce = RobustCrossEntropyLoss(**kwargs)
        self.label_smoothing = float((ce_kwargs or {}).get("label_smoothing", 0.0))
        self.fuses_ce = (
            self.ce is not None
            and not self.region_based
            and self.weight_dice != 0
            and isinstance(loss, ClassSumLoss)
            and set(ce_kwargs or {}) <= {"label_smoothing"}
        )

    # -- the overlap term --------------------------------------------------------------------------------------
    def gathers_sums(self) -> bool:
        """Whether the sums are all-gathered across ranks before the formula (``batch`` under DDP)."""
        return self.ddp and bool(getattr(self.loss, "batch", False)) and _ddp_active()

    def loss_from_local_sums(self, sums: Any, output: torch.Tensor) -> torch.Tensor:
        """``loss.loss_from_sums`` of this rank's sums, gathered over all ranks first if :meth:`gathers_sums`."""
        if self.gathers_sums():
            sums = type(sums)(*all_gather_batch_sums(sums))
        return self.loss.loss_from_sums(sums, num_voxels=output[0, 0].numel())

    def overlap_loss(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``loss(output, target, mask)``; with ``batch`` under DDP from the sums gathered over all ranks."""
        if self.gathers_sums():
            return self.loss_from_local_sums(self.loss.class_sums(output, target, mask), output)
        return self.loss(output, target, mask=mask)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one scale. ``output`` ``(B, C, *spatial)`` logits; ``target`` as in the module docstring."""
        if self.region_based:
            return self._forward_regions(output, target)
        return self._forward_labels(output, target)

    def _forward_labels(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == output.ndim - 1:  # (B, *spatial) -> (B, 1, *spatial)
            target = target[:, None]
        if target.shape[1] != 1:
            raise ValueError(
                f"nnU-Net label-map training expects a target (B, 1, *spatial), got {tuple(target.shape)}; "
                "one-hot targets are not used (regions go through region_based=True)."
            )
        mask = None
        target_overlap = target
        if self.ignore_label is not None:
            mask = target != self.ignore_label
            target_overlap = torch.where(mask, target, torch.zeros_like(target))
        loss = self.loss
        if self.fuses_ce and isinstance(loss, ClassSumLoss) and can_fuse(loss, output, target_overlap):
            # one pass: the CE is the mean over the voxels the mask keeps, 0 when it keeps none (nnU-Net's skip)
            sums, ce = class_sums_and_cross_entropy(loss, output, target_overlap, mask, self.label_smoothing)
            return self.weight_dice * self.loss_from_local_sums(sums, output) + self.weight_ce * ce
        result = output.new_zeros((), dtype=torch.float32)
        if self.weight_dice != 0:
            result = result + self.weight_dice * self.overlap_loss(output, target_overlap, mask)
        if self.ce is not None and (mask is None or bool(mask.any())):
            result = result + self.weight_ce * self.ce(output, target)
        return result

    def _forward_regions(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = None
        regions = target
        if self.ignore_label is not None:
            ignored = target[:, -1:]
            mask = ~ignored if ignored.dtype == torch.bool else ~(ignored.bool())
            regions = target[:, :-1]
        if regions.shape[1] != output.shape[1]:
            raise ValueError(
                f"region target has {regions.shape[1]} region channels for {output.shape[1]} outputs "
                f"(ignore label {'set' if self.ignore_label is not None else 'not set'})."
            )
        regions = regions.float()
        result = output.new_zeros((), dtype=torch.float32)
        if self.weight_dice != 0:
            result = result + self.weight_dice * self.overlap_loss(output, regions, mask)
        if self.ce is not None:
            if mask is not None:
                bce = (self.ce(output, regions) * mask).sum() / torch.clip(mask.sum(), min=1e-8)
            else:
                bce = self.ce(output, regions)
            result = result + self.weight_ce * bce
        return result

    def extra_repr(self) -> str:
        return (
            f"region_based={self.region_based}, ignore_label={self.ignore_label}, ddp={self.ddp}, "
            f"weight_dice={self.weight_dice}, weight_ce={self.weight_ce}, fuses_ce={self.fuses_ce}"
        )


def deep_supervision_weights(num_outputs: int, *, ddp: bool = False, compiled: bool = False) -> np.ndarray:
    """nnU-Net's weights for the deep-supervision outputs (``nnUNetTrainer._build_loss``).

    Output ``i`` (0 = full resolution) gets ``1 / 2**i``; the lowest resolution gets 0 (``1e-6`` under DDP without
    ``torch.compile``, where a zero weight leaves parameters unused and DDP complains); the weights are normalised to
    sum to 1.

    Args:
        num_outputs: number of network outputs (``len(trainer._get_deep_supervision_scales())``).
        ddp: training under DDP.
        compiled: the trainer compiles (``trainer._do_i_compile()``).
    """
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}.")
    weights = np.array([1 / (2**i) for i in range(num_outputs)])
    if num_outputs > 1:
        weights[-1] = 1e-6 if (ddp and not compiled) else 0
    return weights / weights.sum()


def wrap_deep_supervision(loss: nn.Module, weights: Sequence[float] | np.ndarray) -> nn.Module:
    """nnU-Net's ``DeepSupervisionWrapper(loss, weights)``: ``Σ_i w_i · loss(output[i], target[i])`` over scales."""
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    return DeepSupervisionWrapper(loss, [float(w) for w in weights])
