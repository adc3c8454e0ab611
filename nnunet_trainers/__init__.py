"""nnU-Net v2 trainers with the Mime, V-Net Dice and Generalized Dice losses of :mod:`monai_mime`.

Setup (one line): ``export nnUNet_extTrainer=$(monai-mime nnunet-path)``, then
``nnUNetv2_train DATASET CONFIG FOLD -tr nnUNetTrainerMime`` (adaptive Mime; or ``...MimeCE``, ``...MimeFixed``,
``...MimeFixedCE``, ``...VNet``, ``...VNetCE``, ``...GDL``, ``...GDLCE``).

Submodules: :mod:`~nnunet_trainers.discovery` (the folder for ``nnUNet_extTrainer``; imports nothing from nnU-Net),
:mod:`~nnunet_trainers.losses` (loss adapters: deep supervision, ignore label, regions, DDP batch dice),
:mod:`~nnunet_trainers.mixins` (the loss mixin), :mod:`~nnunet_trainers.class_weights` (Mime's starting a/b from
the fold), :mod:`~nnunet_trainers.checkpoint` (the checkpoint entry), :mod:`~nnunet_trainers.trainers` (the
trainers), :mod:`~nnunet_trainers.label_check` (out-of-range labels named with their case),
:mod:`~nnunet_trainers.seeding` (``MONAI_MIME_SEED``), :mod:`~nnunet_trainers.budget` (the ``*_CPUBudget`` variants)
and :mod:`~nnunet_trainers.cpu_plans` (the ``2d_cpu128`` / ``2d_cpu64`` configurations; no nnU-Net import).
The trainer names below are imported lazily, so that ``import nnunet_trainers`` does not import nnU-Net.
"""

from __future__ import annotations

from typing import Any

from nnunet_trainers.discovery import ext_folder

__all__ = [
    "GDLCELossMixin",
    "GDLLossMixin",
    "LossTrainerMixin",
    "MimeCELossMixin",
    "MimeFixedCELossMixin",
    "MimeFixedLossMixin",
    "MimeLossMixin",
    "VNetCELossMixin",
    "VNetLossMixin",
    "ext_folder",
    "nnUNetTrainerGDL",
    "nnUNetTrainerGDLCE",
    "nnUNetTrainerMime",
    "nnUNetTrainerMimeCE",
    "nnUNetTrainerMimeFixed",
    "nnUNetTrainerMimeFixedCE",
    "nnUNetTrainerVNet",
    "nnUNetTrainerVNetCE",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from nnunet_trainers import trainers

        return getattr(trainers, name)
    raise AttributeError(f"module 'nnunet_trainers' has no attribute {name!r}")
