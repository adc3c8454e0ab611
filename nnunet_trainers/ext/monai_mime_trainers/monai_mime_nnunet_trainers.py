"""Re-exports for nnU-Net's trainer search (``nnUNet_extTrainer``); see ``nnunet_trainers.discovery``.

nnU-Net imports every file of this folder as a top-level module, so this one holds absolute imports only.
"""

from nnunet_trainers.trainers import (  # noqa: F401
    nnUNetTrainerGDL,
    nnUNetTrainerGDLCE,
    nnUNetTrainerMime,
    nnUNetTrainerMimeCE,
    nnUNetTrainerMimeFixed,
    nnUNetTrainerMimeFixedCE,
    nnUNetTrainerVNet,
    nnUNetTrainerVNetCE,
)
