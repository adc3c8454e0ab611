"""Checkpoints of an experiment: ``checkpoints/<loss spec>.pt`` with the model, the loss's state and what is needed
to rebuild both."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from .cases import PreparedData
from .config import ExperimentConfig
from .specs import LossSpec

__all__ = ["checkpoint_name", "save_checkpoint"]


def checkpoint_name(spec_text: str) -> str:
    """The file name of a loss spec's checkpoint: the spec with characters unsafe in file names replaced."""
    return (re.sub(r"[^A-Za-z0-9._=+-]+", "_", spec_text).strip("_") or "loss") + ".pt"


def save_checkpoint(
    folder: Path, spec: LossSpec, model: nn.Module, loss_fn: nn.Module, config: ExperimentConfig, data: PreparedData
) -> Path:
    """Save ``model``'s weights and ``loss_fn``'s state with the loss spec, the settings, the class names and the
    input channels.

    Keys: ``model`` (``state_dict``), ``loss_state`` (the loss's ``state_dict``: a/b and, for
    :class:`monai_mime.AdaptiveMimeLoss`, the running averages, so ``load_state_dict`` on a loss rebuilt from the
    spec resumes with the weights it had; empty for losses without state), ``loss`` (the spec text), ``config``,
    ``class_names``, ``in_channels``.
    """
    path = folder / checkpoint_name(spec.text)
    torch.save(
        {
            "model": model.state_dict(),
            "loss_state": loss_fn.state_dict(),
            "loss": spec.text,
            "config": config.to_dict(),
            "class_names": data.class_names,
            "in_channels": data.in_channels,
        },
        path,
    )
    return path
