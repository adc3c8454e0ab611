"""Budget variants for CPU runs: nnU-Net's default trainer and this package's, with the same short schedule and seeding.

Like nnU-Net's ``nnUNetTrainer_50epochs``, one trainer name per variant, so that ``-tr`` picks loss and budget
together and every trainer of a comparison has the same budget. :class:`CPUBudgetMixin` changes only the length of
training and nothing of nnU-Net's pipeline (poly-LR SGD over the shorter schedule, deep supervision, oversampling,
augmentation, the final sliding-window validation):

* ``budget_epochs`` epochs of ``budget_iterations`` training iterations, ``budget_val_iterations`` validation
  iterations per epoch (the pseudo Dice of nnU-Net's progress plot);
* ``checkpoint_latest.pth`` every ``budget_save_every`` epochs (nnU-Net: every 50, which a short schedule never
  reaches), so that ``--c`` resumes an interrupted run;
* ``budget_inference_mirroring`` False: no mirroring test-time augmentation in the final validation and in
  ``nnUNetv2_predict`` with these checkpoints (training still mirrors), which makes the validation 4x faster in 2D;
* on the CPU, ``$OMP_NUM_THREADS`` torch threads when it is set (``nnUNetv2_train -device cpu`` otherwise uses every
  core), so that runs side by side do not compete for threads.

Every variant is seeded by ``mime_seed`` / ``$MONAI_MIME_SEED`` (:mod:`nnunet_trainers.seeding`); nnU-Net's default
loss (Dice + CE) gets the same seeding through :class:`nnUNetTrainer_CPUBudget`. Sized for the CPU configurations
of :mod:`nnunet_trainers.cpu_plans` (``-c 2d_cpu128`` / ``2d_cpu64``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_trainers.seeding import SeedMixin
from nnunet_trainers.trainers import (
    nnUNetTrainerMime,
    nnUNetTrainerMimeCE,
    nnUNetTrainerMimeFixed,
    nnUNetTrainerMimeFixedCE,
)

__all__ = [
    "BUDGET_TRAINER_NAMES",
    "CPUBudgetMixin",
    "nnUNetTrainerMimeCE_CPUBudget",
    "nnUNetTrainerMimeFixedCE_CPUBudget",
    "nnUNetTrainerMimeFixed_CPUBudget",
    "nnUNetTrainerMime_CPUBudget",
    "nnUNetTrainer_CPUBudget",
]


class CPUBudgetMixin(nnUNetTrainer):
    """A short fixed schedule for CPU runs (module docstring). Put it first in the bases.

    Attributes:
        budget_epochs: number of epochs.
        budget_iterations: training iterations per epoch.
        budget_val_iterations: validation iterations per epoch (nnU-Net's pseudo Dice).
        budget_save_every: epochs between two ``checkpoint_latest.pth`` (nnU-Net's ``save_every``).
        budget_inference_mirroring: keep nnU-Net's mirroring test-time augmentation in validation and prediction.
    """

    budget_epochs: ClassVar[int] = 40
    budget_iterations: ClassVar[int] = 50
    budget_val_iterations: ClassVar[int] = 5
    budget_save_every: ClassVar[int] = 5
    budget_inference_mirroring: ClassVar[bool] = False

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 -- nnU-Net's signature, which it inspects
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.budget_epochs
        self.num_iterations_per_epoch = self.budget_iterations
        self.num_val_iterations_per_epoch = self.budget_val_iterations
        self.save_every = self.budget_save_every
        threads = os.environ.get("OMP_NUM_THREADS", "").strip()
        if self.device.type == "cpu" and threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self) -> Any:
        """nnU-Net's, then no mirroring at inference unless ``budget_inference_mirroring`` (training still mirrors)."""
        result = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.budget_inference_mirroring:
            self.inference_allowed_mirroring_axes = None
        return result


class nnUNetTrainer_CPUBudget(CPUBudgetMixin, SeedMixin, nnUNetTrainer):
    """nnU-Net's default trainer (Dice + CE, loss untouched) on the CPU budget, seeded."""


class nnUNetTrainerMime_CPUBudget(CPUBudgetMixin, nnUNetTrainerMime):
    """Adaptive Mime on the CPU budget."""


class nnUNetTrainerMimeCE_CPUBudget(CPUBudgetMixin, nnUNetTrainerMimeCE):
    """Adaptive Mime + cross-entropy on the CPU budget."""


class nnUNetTrainerMimeFixed_CPUBudget(CPUBudgetMixin, nnUNetTrainerMimeFixed):
    """Fixed-weight Mime on the CPU budget."""


class nnUNetTrainerMimeFixedCE_CPUBudget(CPUBudgetMixin, nnUNetTrainerMimeFixedCE):
    """Fixed-weight Mime + cross-entropy on the CPU budget."""


#: The budget variants, nnU-Net's default first.
BUDGET_TRAINER_NAMES = (
    "nnUNetTrainer_CPUBudget",
    "nnUNetTrainerMime_CPUBudget",
    "nnUNetTrainerMimeCE_CPUBudget",
    "nnUNetTrainerMimeFixed_CPUBudget",
    "nnUNetTrainerMimeFixedCE_CPUBudget",
)
