"""Mixins that give any ``nnUNetTrainer`` (sub)class one of the :mod:`monai_mime` losses. Put one *first* in the bases.

:class:`LossTrainerMixin` builds the loss where and as nnU-Net builds its own (``nnUNetTrainer._build_loss``): deep
supervision with nnU-Net's weights, the ignore label, region-based training, ``batch_dice`` from the plans, DDP
(:mod:`nnunet_trainers.losses`). With :class:`~monai_mime.AdaptiveMimeLoss` it logs, once per epoch, the a/b that
each deep-supervision output gets at its own size. The a/b part is :mod:`nnunet_trainers.class_weights`, the
checkpoint entry :mod:`nnunet_trainers.checkpoint`. The loss mixins below only choose the loss.
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

import numpy as np
import torch

from nnunet_trainers.checkpoint import CheckpointMixin
from nnunet_trainers.class_weights import ClassWeightsMixin
from nnunet_trainers.label_check import LabelCheckMixin
from nnunet_trainers.losses import NnUNetLossAdapter, deep_supervision_weights, wrap_deep_supervision
from nnunet_trainers.seeding import SeedMixin

__all__ = [
    "ENV_LOSS",
    "GDLCELossMixin",
    "GDLLossMixin",
    "LossTrainerMixin",
    "MimeCELossMixin",
    "MimeFixedCELossMixin",
    "MimeFixedLossMixin",
    "MimeLossMixin",
    "VNetCELossMixin",
    "VNetLossMixin",
]

#: Environment variable naming the loss of :class:`MimeLossMixin` trainers (read when the loss is built).
ENV_LOSS = "MONAI_MIME_LOSS"
#: Version of the checkpoint entry's layout (2: with ``loss_state``).
_STATE_VERSION = 2
#: the losses that take dataset-level a/b (Mime with fixed weights, and with weights that follow Eq. 2)
MIME_LOSSES = ("mime", "mime_adaptive")


class LossTrainerMixin(SeedMixin, LabelCheckMixin, CheckpointMixin, ClassWeightsMixin):
    """Give an ``nnUNetTrainer`` (sub)class one of the :mod:`monai_mime` losses. Put it *first* in the bases.

    Class attributes (override them in a subclass):

    Attributes:
        mime_loss_name: a name of :func:`monai_mime.get_loss` (``"mime_adaptive"``, ``"mime"``, ``"vnet"``,
            ``"gdl"``, ``"dice"``, or one you registered). The Mime losses get their a/b from the fold's statistics.
            ``None``: ``$MONAI_MIME_LOSS`` when the loss is built, else ``"mime_adaptive"``.
        mime_with_ce: add nnU-Net's cross-entropy (``RobustCrossEntropyLoss``; ``BCEWithLogitsLoss`` for regions)
            with weight 1 to the overlap loss with weight 1, like ``DC_and_CE_loss``.
        mime_weight_mode: the a/b mode of :meth:`ClassStatistics.weights` (``"paper"``, ``"mean"``, ``"dice"``,
            ``"balance"``…). ``None``: ``$MONAI_MIME_WEIGHT_MODE`` if set, else the library default.
        mime_weight_kwargs: keyword arguments of the mode (``None``: ``$MONAI_MIME_WEIGHT_KWARGS`` as JSON, else none).
        mime_rescale_to_patch: pass the configuration's patch size to ``weights(patch_size=...)`` so that the
            weights match the mean class count of a training *patch* rather than of a whole image.
        mime_include_background: label-map training only: let class 0 take part in the loss (nnU-Net's ``do_bg``,
            False by default as in nnU-Net). Region-based training always uses every region.
        mime_loss_kwargs: extra constructor arguments of the loss (e.g. ``{"w_type": "simple"}`` for GDL,
            ``{"momentum": 0.999}`` for the adaptive Mime). ``validate`` defaults to False here: the per-call input
            checks cost host syncs.
        mime_seed: seed torch, numpy and random (``None``: ``$MONAI_MIME_SEED``, else unseeded; see
            :mod:`nnunet_trainers.seeding`).

    ``batch`` follows the plans' ``batch_dice`` for the Dice variants (V-Net, GDL), as nnU-Net's Dice does. Mime is
    linear in the probabilities, so summing its sums over the batch first (``batch=True``) changes only its scale
    (the *sum* of the per-image losses instead of their mean, B times larger); it therefore always uses
    ``batch=False``, the mean over images. ``mime_loss_kwargs={"batch": True}`` overrides this.
    """

    mime_loss_name: ClassVar[str | None] = None
    mime_with_ce: ClassVar[bool] = False
    mime_include_background: ClassVar[bool] = False
    mime_loss_kwargs: ClassVar[dict[str, Any]] = {}

    def mime_resolved_loss_name(self) -> str:
        """The loss name: the class attribute ``mime_loss_name``, else ``$MONAI_MIME_LOSS``, else ``mime_adaptive``."""
        if self.mime_loss_name is not None:
            return self.mime_loss_name
        return os.environ.get(ENV_LOSS, "").strip() or "mime_adaptive"

    @property
    def mime_needs_class_weights(self) -> bool:
        """Whether the loss takes dataset-level a/b (Mime)."""
        return self.mime_resolved_loss_name() in MIME_LOSSES

    def _build_loss(self) -> torch.nn.Module:
        """nnU-Net's ``_build_loss`` with the overlap loss replaced (see the module docstring)."""
        from monai_mime import get_loss

        name = self.mime_resolved_loss_name()
        regions = bool(self.label_manager.has_regions)
        loss_kwargs: dict[str, Any] = dict(
            include_background=True if regions else bool(self.mime_include_background),
            to_onehot_y=not regions,
            softmax=not regions,
            sigmoid=regions,
            batch=bool(self.configuration_manager.batch_dice) and name not in MIME_LOSSES,
            reduction="mean",
            validate=False,
        )
        if name == "mime_adaptive":  # the starting a/b hold at the patch size, the full-resolution output's
            loss_kwargs["reference_voxels"] = math.prod(int(p) for p in self.configuration_manager.patch_size)
        loss_kwargs.update(self.mime_loss_kwargs)
        include_background = bool(loss_kwargs["include_background"])
        state: dict[str, Any] = {
            "version": _STATE_VERSION,
            "loss": name,
            "with_ce": bool(self.mime_with_ce),
            "include_background": include_background,
            "region_based": regions,
            "batch_dice": loss_kwargs["batch"],
        }
        if name in MIME_LOSSES:
            weights = self._mime_class_weights()
            state.update(weights)
            a, b = np.asarray(weights["a"]), np.asarray(weights["b"])
            if not include_background:
                a, b = a[1:], b[1:]
            loss_kwargs.update(a=a, b=b)
        loss = get_loss(name, **loss_kwargs)
        adapter = NnUNetLossAdapter(
            loss,
            region_based=regions,
            ignore_label=self.label_manager.ignore_label,
            ddp=self.is_ddp,
            weight_dice=1.0,
            weight_ce=1.0 if self.mime_with_ce else 0.0,
        )
        result: torch.nn.Module = adapter
        if self.enable_deep_supervision:
            num_outputs = len(self._get_deep_supervision_scales())
            weights_ds = deep_supervision_weights(num_outputs, ddp=self.is_ddp, compiled=self._do_i_compile())
            result = wrap_deep_supervision(adapter, weights_ds.tolist())
        self._mime_state = state
        self.print_to_log_file(f"monai-mime: loss {loss!r} (cross-entropy: {bool(self.mime_with_ce)})")
        return result.to(self.device)

    def mime_overlap_loss(self) -> torch.nn.Module | None:
        """The :mod:`monai_mime` loss inside the built loss (adapter, deep-supervision wrapper); None before."""
        if getattr(self, "loss", None) is None:
            return None
        from monai_mime.losses import ClassSumLoss

        return next((m for m in self.loss.modules() if isinstance(m, ClassSumLoss)), None)

    def mime_output_voxels(self) -> list[int]:
        """One image's spatial voxel count at each network output: the patch size scaled as nnU-Net scales the
        deep-supervision targets (``round(patch * scale)`` per axis); one entry without deep supervision."""
        patch = [int(p) for p in self.configuration_manager.patch_size]
        scales = self._get_deep_supervision_scales() if self.enable_deep_supervision else None
        if not scales:
            return [math.prod(patch)]
        return [math.prod(round(p * s) for p, s in zip(patch, scale)) for scale in scales]

    def mime_output_weights(self) -> list[tuple[int, list[float], list[float]]]:
        """``(voxels, a, b)`` per network output for a loss with per-size weights (``AdaptiveMimeLoss``), else []."""
        loss = self.mime_overlap_loss()
        weights_at = getattr(loss, "weights_at", None)
        if weights_at is None or not getattr(loss, "started", False):
            return []
        result = []
        for voxels in self.mime_output_voxels():
            a, b = weights_at(voxels)
            result.append((voxels, a.tolist(), b.tolist()))
        return result

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        """nnU-Net's ``on_train_epoch_end``, then the a/b of every output (AdaptiveMimeLoss) in the log."""
        super().on_train_epoch_end(train_outputs)
        for index, (voxels, a, b) in enumerate(self.mime_output_weights()):
            self.print_to_log_file(
                f"monai-mime: output {index} ({voxels} voxels): a={_rounded(a)}, b={_rounded(b)}",
                also_print_to_console=index == 0,
            )


def _rounded(values: list[float]) -> list[str]:
    return [f"{v:.4g}" for v in values]


class MimeLossMixin(LossTrainerMixin):
    """Mime (Eq. 3) whose a/b follow Eq. 2 at running averages: :class:`monai_mime.AdaptiveMimeLoss`.

    It starts from the a/b of the weight mode at the patch size (the fold's statistics) and then follows the Dice
    gradient at running per-voxel averages of the training batches' sums — the setting the ablation on ACDC and on
    the rare-class data chose (``docs/explanation/which_ab.md``). Each deep-supervision output gets the weights of its
    own size; under DDP the ranks share the averages; the averages are saved in checkpoints. ``$MONAI_MIME_LOSS``
    (read when the loss is built) may name another loss; the fixed-weight Mime has its own trainers
    (:class:`MimeFixedLossMixin`).
    """


class MimeCELossMixin(MimeLossMixin):
    """Adaptive Mime + cross-entropy."""

    mime_with_ce = True


class MimeFixedLossMixin(LossTrainerMixin):
    """The paper's Mime (Eq. 3) with fixed a/b of the weight mode: :class:`monai_mime.MimeLoss`."""

    mime_loss_name = "mime"


class MimeFixedCELossMixin(MimeFixedLossMixin):
    """Fixed-weight Mime + cross-entropy."""

    mime_with_ce = True


class VNetLossMixin(LossTrainerMixin):
    """V-Net Dice (Eq. 5)."""

    mime_loss_name = "vnet"


class VNetCELossMixin(VNetLossMixin):
    """V-Net Dice + cross-entropy."""

    mime_with_ce = True


class GDLLossMixin(LossTrainerMixin):
    """Generalized Dice (Eq. 4), ``w_k = 1/G_k²``."""

    mime_loss_name = "gdl"


class GDLCELossMixin(GDLLossMixin):
    """Generalized Dice + cross-entropy."""

    mime_with_ce = True
