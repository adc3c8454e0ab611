"""Your own nnU-Net trainers with the monai-mime losses: put a loss mixin first, then any nnU-Net trainer.

This folder is an example of a *user* trainer folder. Compose it with the package's folder in nnUNet_extTrainer::

    export nnUNet_extTrainer=$(monai-mime nnunet-path):/path/to/examples/nnunet/my_trainers
    nnUNetv2_train DATASET 2d 0 -tr nnUNetTrainerMime_250epochs

nnU-Net imports every file of this folder as a top-level module: use absolute imports, and pick class names that
neither nnU-Net nor monai-mime ships.
"""

import torch
from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs import (
    nnUNetTrainer_5epochs,
    nnUNetTrainer_250epochs,
)

from nnunet_trainers.mixins import GDLCELossMixin, MimeCELossMixin, MimeFixedLossMixin, MimeLossMixin


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


class nnUNetTrainerDefault_CPUDemo(nnUNetTrainer_5epochs):
    """A short CPU budget with nnU-Net's own loss (Dice + CE), the baseline of the demos below: 5 epochs of 50
    iterations, batch size at most 4, one torch thread. Run with ``-device cpu`` and ``nnUNet_n_proc_DA=0``."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 -- nnU-Net's signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = 50
        self.num_val_iterations_per_epoch = 10
        if self.device.type == "cpu":
            torch.set_num_threads(1)

    def _set_batch_size_and_oversample(self) -> None:
        super()._set_batch_size_and_oversample()
        self.batch_size: int = min(int(self.batch_size), 4)


class nnUNetTrainerMime_CPUDemo(MimeLossMixin, nnUNetTrainerDefault_CPUDemo):
    """The same budget with the adaptive Mime: a mixin on top of a trainer variant of your own."""


class nnUNetTrainerMimeFixed_CPUDemo(MimeFixedLossMixin, nnUNetTrainerDefault_CPUDemo):
    """The same budget with the paper's fixed-weight Mime."""


class nnUNetTrainerMimeCE_CPUDemo(MimeCELossMixin, nnUNetTrainerDefault_CPUDemo):
    """The same budget with the adaptive Mime + cross-entropy."""
