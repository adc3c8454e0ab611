"""Cross-entropy with the call signature of the other losses, and the masked cross-entropy term of the compounds."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CrossEntropyLoss(nn.Module):
    """``torch.nn.functional.cross_entropy`` on logits ``(B, K, *spatial)`` and a label map ``(B, 1, *spatial)``.

    Args:
        ignore_index: a label value whose voxels take no part (default: none).
        reduction: ``"mean"`` over the non-ignored voxels, ``"sum"`` or ``"none"``.
    """

    def __init__(self, ignore_index: int | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == input.ndim:
            target = target[:, 0]
        ignore = -100 if self.ignore_index is None else self.ignore_index
        return F.cross_entropy(input.float(), target.long(), ignore_index=ignore, reduction=self.reduction)


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
        return _masked_reduction(per_voxel, keep, None if weight is None else weight.to(x.dtype)[labels], reduction)


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
