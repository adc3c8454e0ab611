"""Seeded nnU-Net runs: one seed for torch, numpy and random, set before the network and the data loaders are built.

nnU-Net's training is unseeded and ``nnUNetv2_train`` has no seed option. :class:`SeedMixin` (a base of every trainer
of this package, and of the budget variants of nnU-Net's own trainer) takes the seed from its class attribute
``mime_seed`` or, where that is None, from the environment variable ``MONAI_MIME_SEED`` (read once, when the trainer
first initialises); with neither, nothing is seeded and the run is nnU-Net's. With a seed:

* ``initialize`` seeds before nnU-Net builds the network (its initial weights), the loss and the optimiser;
* ``get_dataloaders`` seeds again, with a seed derived from ``(seed, current_epoch)``, before nnU-Net builds the
  data loaders: the patch sampling, the foreground oversampling and the augmentation draw from numpy's, torch's and
  random's global generators, which with ``nnUNet_n_proc_DA=0`` (single-threaded augmentation) are these. A run
  resumed with ``--c`` at epoch ``e`` thus draws a stream of its own rather than repeating epoch 0's.

Two CPU runs with ``nnUNet_n_proc_DA=0``, the same seed and the same number of threads give the same training losses.
With background augmentation workers (``nnUNet_n_proc_DA`` > 0) nnU-Net's ``NonDetMultiThreadedAugmenter`` seeds its
workers itself, so only the network's initial weights follow the seed; on a GPU, cuDNN's kernel choice may differ
between runs as well. A resumed run is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import os
import random
from typing import Any, ClassVar

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

__all__ = ["ENV_SEED", "SeedMixin", "derived_seed", "resolve_seed", "seed_everything"]

#: The environment variable that sets the seed of trainers whose ``mime_seed`` is None.
ENV_SEED = "MONAI_MIME_SEED"


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch's (CPU and every CUDA device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- nnU-Net samples from the legacy global generator
    torch.manual_seed(seed)


def derived_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed derived from ``seed`` and ``keys`` (numpy's ``SeedSequence``): distinct keys, unrelated streams."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def resolve_seed(attribute: int | None) -> int | None:
    """``attribute`` if not None, else the integer in ``$MONAI_MIME_SEED`` (a non-negative integer), else None.

    Raises:
        ValueError: if the environment variable holds anything but a non-negative integer.
    """
    if attribute is not None:
        return int(attribute)
    text = os.environ.get(ENV_SEED, "").strip()
    if not text:
        return None
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise ValueError(f"{ENV_SEED}={text!r}: expected a non-negative integer")
    return seed


class SeedMixin(nnUNetTrainer):
    """Seed an ``nnUNetTrainer`` (sub)class before its network and data loaders are built (module docstring).

    Attributes:
        mime_seed: the seed; None takes ``$MONAI_MIME_SEED``, and without it nothing is seeded.
    """

    mime_seed: ClassVar[int | None] = None

    def mime_resolved_seed(self) -> int | None:
        """The seed of this run (read from the class attribute or the environment once, then kept)."""
        if not hasattr(self, "_mime_seed_value"):
            self._mime_seed_value = resolve_seed(self.mime_seed)
        return self._mime_seed_value

    def initialize(self) -> None:
        """Seed, then nnU-Net's ``initialize`` (network, loss, optimiser)."""
        seed = self.mime_resolved_seed()
        if seed is not None and not self.was_initialized:
            seed_everything(seed)
            self.print_to_log_file(f"monai-mime: seed {seed} (torch, numpy, random)")
        super().initialize()

    def get_dataloaders(self) -> Any:
        """Seed with ``derived_seed(seed, current_epoch)``, then nnU-Net's ``get_dataloaders``."""
        seed = self.mime_resolved_seed()
        if seed is not None:
            seed_everything(derived_seed(seed, self.current_epoch))
        return super().get_dataloaders()
