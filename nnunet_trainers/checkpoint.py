"""This package's entry in nnU-Net checkpoints, ``checkpoint["monai_mime"]``: added to a written file, read back.

The entry holds the loss name, the starting a/b with where they came from (weight mode, patch size, class names and
counts, fold), and ``loss_state``: the overlap loss's ``state_dict`` (for :class:`~monai_mime.AdaptiveMimeLoss` its
starting weights and running averages). :class:`~nnunet_trainers.mixins.LossTrainerMixin` adds it after nnU-Net's
``save_checkpoint`` has written the file (:func:`add_checkpoint_entry`) and reads it before nnU-Net's
``load_checkpoint`` (:func:`read_checkpoint_entry`), so that ``--c``, ``--val`` and a checkpoint loaded before or after
``initialize()`` build the loss with the stored a/b and then restore ``loss_state``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["CHECKPOINT_KEY", "add_checkpoint_entry", "read_checkpoint_entry"]

#: Key of this package's entry in nnU-Net checkpoints.
CHECKPOINT_KEY = "monai_mime"


def add_checkpoint_entry(filename: str, entry: dict[str, Any] | None) -> None:
    """Rewrite the checkpoint ``filename`` with ``checkpoint["monai_mime"] = entry``, atomically (a temporary file in
    the same folder, then a rename), its tensors on the devices they were saved from."""
    checkpoint = torch.load(filename, weights_only=False)
    checkpoint[CHECKPOINT_KEY] = entry
    partial = f"{filename}.monai_mime.tmp"
    try:
        torch.save(checkpoint, partial)
        os.replace(partial, filename)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def read_checkpoint_entry(filename: str) -> dict[str, Any] | None:
    """``checkpoint["monai_mime"]`` of a checkpoint file, memory-mapped so the weights are not read."""
    try:
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, ValueError):  # legacy (non-zip) format cannot be memory-mapped
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
    entry = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    return None if entry is None else dict(entry)
