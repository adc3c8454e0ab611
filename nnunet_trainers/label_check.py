"""A one-line error for label values outside ``[0, K)`` in an nnU-Net batch, naming the value and the cases.

The trainers build their losses with ``validate=False`` (the losses' own input checks cost host syncs on every
call), so a label the loss cannot take would otherwise fail deep inside the scatter of the class sums: an index error
on the CPU, a device-side assert on a GPU. :class:`LabelCheckMixin` checks each batch's full-resolution label map
with one ``torch.aminmax`` *before* ``train_step`` / ``validation_step`` move it to the device, so the check is a
pass over the CPU tensor the data loader made and adds no device sync. The batch's ``keys`` (nnU-Net's case
identifiers) name the cases that hold the value. Region-based targets are masks built by nnU-Net from the label map
and are not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

__all__ = ["LabelCheckMixin", "check_label_range"]


def check_label_range(
    target: torch.Tensor,
    num_classes: int,
    ignore_label: int | None = None,
    keys: Sequence[Any] | None = None,
) -> None:
    """Raise a one-line ``ValueError`` if ``target`` (``(B, 1, *spatial)`` labels) holds a value the loss cannot take.

    The allowed values are ``0 … num_classes − 1`` and ``ignore_label`` (nnU-Net makes it the value ``K``). The check
    is one ``aminmax``; only when it fails are the offending images located, to name them by ``keys[i]``.
    """
    lowest, highest = (int(v) for v in torch.aminmax(target))
    top = num_classes - 1 if ignore_label is None else max(num_classes - 1, int(ignore_label))
    if lowest >= 0 and highest <= top:
        return
    value = lowest if lowest < 0 else highest
    images = (target == value).flatten(1).any(1).nonzero().flatten().tolist()
    where = f"case {', '.join(str(keys[i]) for i in images)}" if keys is not None else f"batch image {images}"
    allowed = f"0..{num_classes - 1}" + ("" if ignore_label is None else f" or the ignore label {ignore_label}")
    raise ValueError(f"monai-mime: label value {value} in {where} is outside the dataset's labels ({allowed}).")


class LabelCheckMixin(nnUNetTrainer):
    """``train_step`` / ``validation_step`` that call :func:`check_label_range` on the batch first (label maps)."""

    def mime_check_labels(self, batch: dict) -> None:
        """Check the full-resolution target of an nnU-Net batch (``{"data", "target", "keys"}``)."""
        if self.label_manager.has_regions:
            return
        target = batch["target"]
        full = target[0] if isinstance(target, list) else target
        manager = self.label_manager
        check_label_range(full, manager.num_segmentation_heads, manager.ignore_label, batch.get("keys"))

    def train_step(self, batch: dict) -> dict:
        self.mime_check_labels(batch)
        return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        self.mime_check_labels(batch)
        return super().validation_step(batch)
