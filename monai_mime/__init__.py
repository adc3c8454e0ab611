"""monai-mime: the Mime, V-Net Dice and Generalized Dice losses for MONAI and nnU-Net v2.

Losses (``torch.nn.Module``, MONAI argument names): :class:`SoftDiceLoss` (Eq. 1), :class:`VNetDiceLoss` (Eq. 5),
:class:`GeneralizedSoftDiceLoss` (Eq. 4), :class:`MimeLoss` (Eq. 3); a registry (:func:`get_loss`,
:func:`list_losses`, :func:`register_loss`); dataset statistics for Mime's a/b (:class:`ClassStatistics`).
"""

from monai_mime.losses import AdaptiveMimeLoss, CrossEntropyLoss, GeneralizedSoftDiceLoss, MimeLoss, SoftDiceLoss, VNetDiceLoss
from monai_mime.registry import get_loss, list_losses, register_loss

__version__ = "0.1.0"

__all__ = [
    "AdaptiveMimeLoss",
    "CrossEntropyLoss",
    "GeneralizedSoftDiceLoss",
    "MimeLoss",
    "SoftDiceLoss",
    "VNetDiceLoss",
    "get_loss",
    "list_losses",
    "register_loss",
]
