"""Loss classes: Soft Dice (Eq. 1), V-Net Dice (Eq. 5), Generalized Dice (Eq. 4), Mime (Eq. 3), cross-entropy."""

from monai_mime.losses.adaptive_mime import AdaptiveMimeLoss
from monai_mime.losses.base import ClassSumLoss
from monai_mime.losses.ce import CrossEntropyLoss
from monai_mime.losses.dice import GeneralizedSoftDiceLoss, SoftDiceLoss, VNetDiceLoss
from monai_mime.losses.mime import MimeLoss
from monai_mime.losses.sums import ClassSums, dense_sums, label_map_sums

__all__ = [
    "AdaptiveMimeLoss",
    "ClassSumLoss",
    "ClassSums",
    "CrossEntropyLoss",
    "GeneralizedSoftDiceLoss",
    "MimeLoss",
    "SoftDiceLoss",
    "VNetDiceLoss",
    "dense_sums",
    "label_map_sums",
]
