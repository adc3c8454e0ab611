"""Your own nnU-Net trainers with the monai-mime losses: put a loss mixin first, then any nnU-Net trainer.

This folder is an example of a *user* trainer folder. Compose it with the package's folder in nnUNet_extTrainer::

    export nnUNet_extTrainer=$(monai-mime nnunet-path):/path/to/examples/nnunet/my_trainers
    nnUNetv2_train DATASET 2d 0 -tr nnUNetTrainerMime_250epochs

nnU-Net imports every file of this folder as a top-level module: use absolute imports, and pick class names that
neither nnU-Net nor monai-mime ships.
"""

from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs import (
    nnUNetTrainer_250epochs,
)

from nnunet_trainers.mixins import GDLCELossMixin, MimeCELossMixin, MimeLossMixin


class nnUNetTrainerMime_250epochs(MimeLossMixin, nnUNetTrainer_250epochs):
    """Mime (Eq. 3) with nnU-Net's 250-epoch schedule: the mixin brings the loss, the variant its schedule."""


class nnUNetTrainerMimeCE_250epochs(MimeCELossMixin, nnUNetTrainer_250epochs):
    """Mime + cross-entropy, 250 epochs."""


class nnUNetTrainerGDLCE_250epochs(GDLCELossMixin, nnUNetTrainer_250epochs):
    """Generalized Dice + cross-entropy, 250 epochs."""


class nnUNetTrainerMimeDiceWeights_250epochs(MimeLossMixin, nnUNetTrainer_250epochs):
    """Mime whose a/b imitate the Dice gradient at 50 % overlap (``ClassStatistics.weights(mode="dice")``).

    The class attributes of the mixin choose the weights; $MONAI_MIME_WEIGHT_MODE only applies where a trainer
    leaves ``mime_weight_mode`` at None.
    """

    mime_weight_mode = "dice"
    mime_weight_kwargs = {"overlap": 0.5}
