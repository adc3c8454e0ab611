"""Cross-entropy with the call signature of the other losses, and the masked cross-entropy term of the compounds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from monai_mime.losses.base import as_class_weight


class CrossEntropyLoss(nn.Module):
    """Cross-entropy on logits ``(B, K, *spatial)`` with the argument vocabulary of the other losses.

    It is the cross-entropy term of the compounds on its own (:func:`cross_entropy_term`, i.e. that of
    ``monai.losses.DiceCELoss``): ``F.cross_entropy`` over the channels, binary cross-entropy with logits for one
    channel.

    Args:
        include_background: accepted for one vocabulary across the losses; the cross-entropy has one term per voxel
            over all classes and no per-class term to drop (in MONAI's ``DiceCELoss`` it acts on the Dice only).
        to_onehot_y: the target is a label map ``(B, 1, *spatial)`` (default); False: class probabilities
            ``(B, K, *spatial)`` (one-hot or soft), as for the other losses.
        softmax: the loss applies its own log-softmax to logits, so True (default); False (probabilities as input)
            is refused.
        ignore_index: a label value whose voxels take no part (label maps).
        reduction: ``"mean"`` over the non-ignored voxels (PyTorch's weighted mean with ``weight``) or ``"sum"``.
        weight: class weights of the cross-entropy, length ``K`` (``pos_weight`` for one channel); cast to the
            logits' dtype and device.
        label_smoothing: PyTorch's ``label_smoothing``.
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = True,
        softmax: bool = True,
        ignore_index: int | None = None,
        reduction: str = "mean",
        weight: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        for name, flag in (("include_background", include_background), ("to_onehot_y", to_onehot_y)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}.")
        if softmax is not True:
            raise ValueError(
                "the cross-entropy applies its own log-softmax to logits: softmax=False (probabilities as input) "
                "is not supported."
            )
        if reduction not in ("mean", "sum"):
            raise ValueError(f"the cross-entropy reduces with 'mean' or 'sum', got {reduction!r}.")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}.")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.softmax = softmax
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", None if weight is None else as_class_weight(weight))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        channels = (1,) if self.to_onehot_y else (input.shape[1],)
        if input.ndim < 3 or target.ndim != input.ndim or target.shape[1] not in channels:
            expected = "a label map (B, 1, *spatial)" if self.to_onehot_y else "class probabilities (B, K, *spatial)"
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match input {tuple(input.shape)} with "
                f"to_onehot_y={self.to_onehot_y}: expected {expected}."
            )
        return cross_entropy_term(
            input,
            target,
            weight=self.weight,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


def cross_entropy_term(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """The cross-entropy term of ``monai.losses.DiceCELoss``, in float32, with voxels left out by a mask.

    * ``K > 1`` channels, label map ``(B, 1, *spatial)``: ``F.cross_entropy`` with class weights ``weight`` and
      ``label_smoothing``; voxels of ``ignore_index`` or where ``mask`` is 0 are left out. ``"mean"`` is PyTorch's
      weighted mean ``Σ_i v_i CE_i / Σ_i v_i w[t_i]`` (``w = 1`` without weights), 0 when no voxel is left.
    * ``K > 1``, target ``(B, K, *spatial)``: class probabilities (one-hot or soft); ``"mean"`` is over the voxels.
    * ``K = 1``: binary cross-entropy with logits, ``weight`` as ``pos_weight`` (MONAI's choice).

    ``reduction`` is ``"mean"`` or ``"sum"`` (over voxels and images).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"the cross-entropy term reduces with 'mean' or 'sum', got {reduction!r}.")
    with torch.autocast(device_type=input.device.type, enabled=False):
        x = input if input.dtype == torch.float64 else input.float()
        if weight is not None:
            weight = weight.to(dtype=x.dtype, device=x.device)
        keep = None if mask is None else mask[:, 0].to(x.dtype)
        if x.shape[1] == 1:
            if ignore_index is not None:
                raise ValueError("ignore_index needs a label map over several channels; pass a mask instead.")
            per_voxel = F.binary_cross_entropy_with_logits(x, target.to(x.dtype), pos_weight=weight, reduction="none")
            return _masked_reduction(per_voxel[:, 0], keep, None, reduction)
        if target.shape[1] != 1:  # class probabilities
            if ignore_index is not None:
                raise ValueError("ignore_index needs a label-map target (B, 1, *spatial); pass a mask instead.")
            if keep is None:
                return F.cross_entropy(
                    x, target.to(x.dtype), weight, reduction=reduction, label_smoothing=label_smoothing
                )
            per_voxel = F.cross_entropy(
                x, target.to(x.dtype), weight, reduction="none", label_smoothing=label_smoothing
            )
            return _masked_reduction(per_voxel, keep, None, reduction)
        labels = target[:, 0].long()
        if keep is None and ignore_index is None:
            return F.cross_entropy(x, labels, weight, reduction=reduction, label_smoothing=label_smoothing)
        if ignore_index is not None:
            ignored = labels == ignore_index
            keep = (~ignored).to(x.dtype) if keep is None else keep * ~ignored
            labels = labels.masked_fill(ignored, 0)
        assert keep is not None
        per_voxel = F.cross_entropy(x, labels, weight, reduction="none", label_smoothing=label_smoothing)
        return _masked_reduction(per_voxel, keep, None if weight is None else weight[labels], reduction)


def _masked_reduction(
    per_voxel: torch.Tensor, keep: torch.Tensor | None, voxel_weight: torch.Tensor | None, reduction: str
) -> torch.Tensor:
    """``Σ v·CE`` or ``Σ v·CE / Σ v·w`` (0 when that is 0) for ``v = keep`` (1 when ``None``), ``w = voxel_weight``."""
    if keep is not None:
        per_voxel = per_voxel * keep
    total = per_voxel.sum()
    if reduction == "sum":
        return total
    count = per_voxel.new_tensor(per_voxel.numel()) if keep is None else keep.sum()
    if voxel_weight is not None:
        count = voxel_weight.sum() if keep is None else torch.linalg.vecdot(voxel_weight.flatten(), keep.flatten())
    return total / count.clamp_min(torch.finfo(count.dtype).tiny)
