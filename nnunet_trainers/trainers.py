"""nnU-Net v2 trainers with the Mime (Eq. 3), V-Net Dice (Eq. 5) and Generalized Dice (Eq. 4) losses.

Eight trainers, chosen by name with ``nnUNetv2_train DATASET CONFIG FOLD -tr <name>`` once
``nnUNet_extTrainer=$(monai-mime nnunet-path)`` is set (see :mod:`nnunet_trainers.discovery`):

============================  =============================================================================
``nnUNetTrainerMime``         adaptive Mime (:class:`~monai_mime.AdaptiveMimeLoss`): a/b start from the fold's
                              training cases and follow Eq. 2 at running per-voxel averages
``nnUNetTrainerMimeCE``       adaptive Mime + cross-entropy (weights 1 and 1, as nnU-Net's default Dice + CE)
``nnUNetTrainerMimeFixed``    the paper's Mime with fixed a/b from the fold's training cases
``nnUNetTrainerMimeFixedCE``  fixed-weight Mime + cross-entropy
``nnUNetTrainerVNet``         V-Net Dice (Eq. 5, squared probabilities in the denominator)
``nnUNetTrainerVNetCE``       V-Net Dice + cross-entropy
``nnUNetTrainerGDL``          Generalized Dice (Eq. 4, ``w_k = 1/G_k²``)
``nnUNetTrainerGDLCE``        Generalized Dice + cross-entropy
============================  =============================================================================

The trainer's name picks the loss. They leave ``__init__`` alone and override only ``_build_loss``,
``save_checkpoint``, ``load_checkpoint`` (both extend nnU-Net's), ``on_train_epoch_end`` (which adds the a/b of
every output to the log), ``train_step`` / ``validation_step`` (which first check the batch's label values,
:mod:`nnunet_trainers.label_check`) and ``initialize`` / ``get_dataloaders`` to seed a run (``mime_seed`` /
``$MONAI_MIME_SEED``, :mod:`nnunet_trainers.seeding`), via the mixins of :mod:`nnunet_trainers.mixins`. Put a mixin
first to give any trainer of your own one of these losses::

    class MyTrainer(MimeLossMixin, nnUNetTrainer_250epochs):
        mime_weight_mode = "dice"

The starting a/b come from the fold's training cases (:mod:`nnunet_trainers.class_weights`; weight mode: the class
attribute ``mime_weight_mode`` of a subclass, or for these trainers ``$MONAI_MIME_WEIGHT_MODE``, else the default
of :meth:`ClassStatistics.weights`); they and the loss's state (the adaptive Mime's running averages) are stored
in every checkpoint (:mod:`nnunet_trainers.checkpoint`). The mixins and constants are re-exported here.
"""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_trainers.checkpoint import CHECKPOINT_KEY
from nnunet_trainers.class_weights import ENV_WEIGHT_KWARGS, ENV_WEIGHT_MODE
from nnunet_trainers.mixins import (
    GDLCELossMixin,
    GDLLossMixin,
    LossTrainerMixin,
    MimeCELossMixin,
    MimeFixedCELossMixin,
    MimeFixedLossMixin,
    MimeLossMixin,
    VNetCELossMixin,
    VNetLossMixin,
)

__all__ = [
    "CHECKPOINT_KEY",
    "ENV_WEIGHT_KWARGS",
    "ENV_WEIGHT_MODE",
    "GDLCELossMixin",
    "GDLLossMixin",
    "LossTrainerMixin",
    "MimeCELossMixin",
    "MimeFixedCELossMixin",
    "MimeFixedLossMixin",
    "MimeLossMixin",
    "TRAINER_NAMES",
    "VNetCELossMixin",
    "VNetLossMixin",
    "nnUNetTrainerGDL",
    "nnUNetTrainerGDLCE",
    "nnUNetTrainerMime",
    "nnUNetTrainerMimeCE",
    "nnUNetTrainerMimeFixed",
    "nnUNetTrainerMimeFixedCE",
    "nnUNetTrainerVNet",
    "nnUNetTrainerVNetCE",
]


class nnUNetTrainerMime(MimeLossMixin, nnUNetTrainer):
    """nnU-Net's default trainer with the adaptive Mime loss instead of Dice + CE."""


class nnUNetTrainerMimeCE(MimeCELossMixin, nnUNetTrainer):
    """nnU-Net's default trainer with adaptive Mime + cross-entropy (weights 1, 1)."""


class nnUNetTrainerMimeFixed(MimeFixedLossMixin, nnUNetTrainer):
    """nnU-Net's default trainer with the paper's fixed-weight Mime loss (Eq. 3) instead of Dice + CE."""


class nnUNetTrainerMimeFixedCE(MimeFixedCELossMixin, nnUNetTrainer):
    """nnU-Net's default trainer with fixed-weight Mime + cross-entropy (weights 1, 1)."""


class nnUNetTrainerVNet(VNetLossMixin, nnUNetTrainer):
    """nnU-Net's default trainer with the V-Net Dice loss (Eq. 5) instead of Dice + CE."""


class nnUNetTrainerVNetCE(VNetCELossMixin, nnUNetTrainer):
    """nnU-Net's default trainer with V-Net Dice + cross-entropy (weights 1, 1)."""


class nnUNetTrainerGDL(GDLLossMixin, nnUNetTrainer):
    """nnU-Net's default trainer with the Generalized Dice loss (Eq. 4) instead of Dice + CE."""


class nnUNetTrainerGDLCE(GDLCELossMixin, nnUNetTrainer):
    """nnU-Net's default trainer with Generalized Dice + cross-entropy (weights 1, 1)."""


#: The trainer names this package adds to nnU-Net.
TRAINER_NAMES = (
    "nnUNetTrainerMime",
    "nnUNetTrainerMimeCE",
    "nnUNetTrainerMimeFixed",
    "nnUNetTrainerMimeFixedCE",
    "nnUNetTrainerVNet",
    "nnUNetTrainerVNetCE",
    "nnUNetTrainerGDL",
    "nnUNetTrainerGDLCE",
)
