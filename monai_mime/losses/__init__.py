"""Loss classes: Soft Dice (Eq. 1), V-Net Dice (Eq. 5), Generalized Dice (Eq. 4), Mime (Eq. 3), cross-entropy, and
each of them plus cross-entropy (:class:`CompoundCELoss`, fused into one pass over the logits for label maps)."""

from monai_mime.losses.adaptive_mime import AdaptiveMimeLoss
from monai_mime.losses.base import ClassSumLoss
from monai_mime.losses.ce import CrossEntropyLoss
from monai_mime.losses.compound import (
    AdaptiveMimeCELoss,
    CompoundCELoss,
    GDLCELoss,
    MimeCELoss,
    SoftDiceCELoss,
    VNetCELoss,
)
from monai_mime.losses.dice import GeneralizedSoftDiceLoss, SoftDiceLoss, VNetDiceLoss
from monai_mime.losses.mime import MimeLoss
from monai_mime.losses.sums import ClassSums, dense_sums, label_map_sums

__all__ = [
    "AdaptiveMimeCELoss",
    "AdaptiveMimeLoss",
    "ClassSumLoss",
    "ClassSums",
    "CompoundCELoss",
    "CrossEntropyLoss",
    "GDLCELoss",
    "GeneralizedSoftDiceLoss",
    "MimeCELoss",
    "MimeLoss",
    "SoftDiceCELoss",
    "SoftDiceLoss",
    "VNetCELoss",
    "VNetDiceLoss",
    "dense_sums",
    "label_map_sums",
]
