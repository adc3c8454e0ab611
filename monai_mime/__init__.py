"""monai-mime: the Mime, V-Net Dice and Generalized Dice losses for MONAI and nnU-Net v2.

Losses (``torch.nn.Module``, MONAI argument names): :class:`SoftDiceLoss` (Eq. 1), :class:`VNetDiceLoss` (Eq. 5),
:class:`GeneralizedSoftDiceLoss` (Eq. 4), :class:`MimeLoss` (Eq. 3), :class:`AdaptiveMimeLoss`; each plus
cross-entropy (:class:`CompoundCELoss`, :class:`SoftDiceCELoss`, :class:`VNetCELoss`, :class:`GDLCELoss`,
:class:`MimeCELoss`, :class:`AdaptiveMimeCELoss`, ``get_loss("X+ce")``); a registry
(:func:`get_loss`, :func:`list_losses`, :func:`register_loss`); dataset statistics for Mime's a/b
(:class:`ClassStatistics`). Names are imported on first use, so ``monai-mime nnunet-path`` starts without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AdaptiveMimeCELoss": "monai_mime.losses",
    "CompoundCELoss": "monai_mime.losses",
    "GDLCELoss": "monai_mime.losses",
    "MimeCELoss": "monai_mime.losses",
    "SoftDiceCELoss": "monai_mime.losses",
    "VNetCELoss": "monai_mime.losses",
    "AdaptiveMimeLoss": "monai_mime.losses",
    "CrossEntropyLoss": "monai_mime.losses",
    "GeneralizedSoftDiceLoss": "monai_mime.losses",
    "MimeLoss": "monai_mime.losses",
    "SoftDiceLoss": "monai_mime.losses",
    "VNetDiceLoss": "monai_mime.losses",
    "get_loss": "monai_mime.registry",
    "list_losses": "monai_mime.registry",
    "register_loss": "monai_mime.registry",
    "ClassStatistics": "monai_mime.stats",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # the names of _EXPORTS for type checkers (re-exported: ``X as X``)
    from monai_mime.losses import AdaptiveMimeCELoss as AdaptiveMimeCELoss
    from monai_mime.losses import AdaptiveMimeLoss as AdaptiveMimeLoss
    from monai_mime.losses import CompoundCELoss as CompoundCELoss
    from monai_mime.losses import CrossEntropyLoss as CrossEntropyLoss
    from monai_mime.losses import GDLCELoss as GDLCELoss
    from monai_mime.losses import GeneralizedSoftDiceLoss as GeneralizedSoftDiceLoss
    from monai_mime.losses import MimeCELoss as MimeCELoss
    from monai_mime.losses import MimeLoss as MimeLoss
    from monai_mime.losses import SoftDiceCELoss as SoftDiceCELoss
    from monai_mime.losses import SoftDiceLoss as SoftDiceLoss
    from monai_mime.losses import VNetCELoss as VNetCELoss
    from monai_mime.losses import VNetDiceLoss as VNetDiceLoss
    from monai_mime.registry import get_loss as get_loss
    from monai_mime.registry import list_losses as list_losses
    from monai_mime.registry import register_loss as register_loss
    from monai_mime.stats import ClassStatistics as ClassStatistics


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'monai_mime' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
