"""Re-exports of the CPU budget variants for nnU-Net's trainer search (``nnUNet_extTrainer``); see
``nnunet_trainers.budget``. nnU-Net imports every file of this folder as a top-level module: absolute imports only.
"""

from nnunet_trainers.budget import (  # noqa: F401
    nnUNetTrainer_CPUBudget,
    nnUNetTrainerMime_CPUBudget,
    nnUNetTrainerMimeCE_CPUBudget,
    nnUNetTrainerMimeFixed_CPUBudget,
    nnUNetTrainerMimeFixedCE_CPUBudget,
)
