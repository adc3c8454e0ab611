"""Cross-entropy with the call signature of the other losses, so that the registry and the examples treat it alike."""

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
