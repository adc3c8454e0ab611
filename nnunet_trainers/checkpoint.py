"""This package's entry in nnU-Net checkpoints, ``checkpoint["monai_mime"]``, written and read back.

The entry holds the loss name, the starting a/b with where they came from (weight mode, patch size, class names and
counts, fold), and ``loss_state``: the overlap loss's ``state_dict`` (for :class:`~monai_mime.AdaptiveMimeLoss` its
running averages and current a/b). ``--c``, ``--val`` and a checkpoint loaded before or after ``initialize()`` build
the loss with the stored a/b and then restore ``loss_state``, so a resumed run continues with the weights it had.
"""

from __future__ import annotations

from typing import Any

import torch
from torch._dynamo import OptimizedModule

from nnunet_trainers._trainer_base import TrainerBase

__all__ = ["CHECKPOINT_KEY", "CheckpointMixin", "read_checkpoint_entry"]

#: Key of this package's entry in nnU-Net checkpoints.
CHECKPOINT_KEY = "monai_mime"


class CheckpointMixin(TrainerBase):
    """``save_checkpoint`` / ``load_checkpoint`` of :class:`~nnunet_trainers.mixins.LossTrainerMixin`."""

    # set by _build_loss: what the entry describes besides the loss state
    _mime_state: dict[str, Any] | None = None
    # set by load_checkpoint before initialize() builds the loss (read by ClassWeightsMixin)
    _mime_checkpoint_state: dict[str, Any] | None = None

    def mime_checkpoint_state(self) -> dict[str, Any] | None:
        """The entry stored under ``checkpoint["monai_mime"]`` (see the module docstring); None before the loss."""
        if self._mime_state is None:
            return None
        state = dict(self._mime_state)
        loss = self.mime_overlap_loss()
        if loss is not None:
            state["loss_state"] = {k: v.detach().cpu().clone() for k, v in loss.state_dict().items()}
        return state

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's ``save_checkpoint`` (2.8) plus ``checkpoint["monai_mime"]`` (:meth:`mime_checkpoint_state`)."""
        if self.local_rank == 0:
            if not self.disable_checkpointing:
                mod = self.network.module if self.is_ddp else self.network
                if isinstance(mod, OptimizedModule):
                    mod = mod._orig_mod
                checkpoint = {
                    "network_weights": mod.state_dict(),
                    "optimizer_state": self.optimizer.state_dict(),
                    "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
                    "logging": self.logger.get_checkpoint(),
                    "_best_ema": self._best_ema,
                    "current_epoch": self.current_epoch + 1,
                    "init_args": self.my_init_kwargs,
                    "trainer_name": self.__class__.__name__,
                    "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
                    CHECKPOINT_KEY: self.mime_checkpoint_state(),
                }
                torch.save(checkpoint, filename)
            else:
                self.print_to_log_file("No checkpoint written, checkpointing is disabled")

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """Read ``checkpoint["monai_mime"]`` first (so that ``initialize()`` builds the loss with the stored a/b),
        then nnU-Net's ``load_checkpoint``; a loss already built with other a/b is rebuilt; then the loss state."""
        if isinstance(filename_or_checkpoint, dict):
            state = filename_or_checkpoint.get(CHECKPOINT_KEY)
        else:
            state = read_checkpoint_entry(filename_or_checkpoint)
        if state is not None:
            self._mime_checkpoint_state = dict(state)
        rebuild = (
            self.was_initialized
            and state is not None
            and self.mime_needs_class_weights
            and self._mime_state is not None
            and (self._mime_state.get("a"), self._mime_state.get("b")) != (state.get("a"), state.get("b"))
        )
        super().load_checkpoint(filename_or_checkpoint)
        if rebuild:
            self.loss = self._build_loss()
        if state is not None and state.get("loss_state") is not None:
            self._mime_restore_loss_state(state)

    def _mime_restore_loss_state(self, state: dict[str, Any]) -> None:
        loss = self.mime_overlap_loss()
        if loss is None or state.get("loss") != self._mime_state_value("loss"):
            self.print_to_log_file("monai-mime: the checkpoint's loss state belongs to another loss; not restored.")
            return
        device = next((t.device for t in loss.state_dict().values()), torch.device("cpu"))
        loss.load_state_dict({k: torch.as_tensor(v).to(device) for k, v in state["loss_state"].items()})
        self.print_to_log_file(f"monai-mime: loss state restored from the checkpoint: {sorted(state['loss_state'])}")

    def _mime_state_value(self, key: str) -> Any:
        return None if self._mime_state is None else self._mime_state.get(key)


def read_checkpoint_entry(filename: str) -> dict[str, Any] | None:
    """``checkpoint["monai_mime"]`` of a checkpoint file, memory-mapped so the weights are not read."""
    try:
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, ValueError):  # legacy (non-zip) format cannot be memory-mapped
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
    entry = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    return None if entry is None else dict(entry)
