"""The mixin that gives any ``nnUNetTrainer`` (sub)class a :mod:`monai_mime` loss. Put it *first* in the bases.

:class:`LossTrainerMixin` builds the loss where and as nnU-Net builds its own (``nnUNetTrainer._build_loss``): deep
supervision with nnU-Net's weights, the ignore label, region-based training, ``batch_dice`` from the plans, DDP
(:mod:`nnunet_trainers.losses`). For Mime it takes the starting a/b from the fold's statistics or from the checkpoint
being loaded (:mod:`nnunet_trainers.class_weights`); it extends nnU-Net's ``save_checkpoint`` / ``load_checkpoint``
with this package's entry (:mod:`nnunet_trainers.checkpoint`); with :class:`~monai_mime.AdaptiveMimeLoss` it logs,
once per epoch, the a/b that each deep-supervision output gets at its own size. The mixins below it only choose the
loss: one trainer name per loss, as nnU-Net names its variants.

The mixin derives from ``nnUNetTrainer``, so ``class T(MimeLossMixin, AnyTrainerVariant)`` puts the mixin's methods
before the variant's in the method resolution order, and their ``super()`` calls reach the variant.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_trainers.checkpoint import CHECKPOINT_KEY, add_checkpoint_entry, read_checkpoint_entry
from nnunet_trainers.class_weights import (
    WEIGHT_STATE_KEYS,
    broadcast_from_rank0,
    compute_class_weights,
    fold_statistics,
    requested_weight_kwargs,
    requested_weight_mode,
    statistics_cache_file,
)
from nnunet_trainers.label_check import LabelCheckMixin
from nnunet_trainers.losses import NnUNetLossAdapter, deep_supervision_weights, wrap_deep_supervision
from nnunet_trainers.seeding import SeedMixin

if TYPE_CHECKING:
    from monai_mime.stats import ClassStatistics

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
]

#: Version of the checkpoint entry's layout (2: with ``loss_state``).
_STATE_VERSION = 2
#: the losses that take dataset-level a/b (Mime with fixed weights, and with weights that follow Eq. 2)
MIME_LOSSES = ("mime", "mime_adaptive")


class LossTrainerMixin(SeedMixin, LabelCheckMixin, nnUNetTrainer):
    """Give an ``nnUNetTrainer`` (sub)class one of the :mod:`monai_mime` losses. Put it *first* in the bases.

    Class attributes (override them in a subclass):

    Attributes:
        mime_loss_name: a name of :func:`monai_mime.get_loss` (``"mime_adaptive"``, ``"mime"``, ``"vnet"``,
            ``"gdl"``, ``"dice"``, or one you registered). The Mime losses get their a/b from the fold's statistics.
        mime_with_ce: add nnU-Net's cross-entropy (``RobustCrossEntropyLoss``; ``BCEWithLogitsLoss`` for regions)
            with weight 1 to the overlap loss with weight 1, like ``DC_and_CE_loss``.
        mime_weight_mode: the a/b mode of :meth:`ClassStatistics.weights` (``"paper"``, ``"mean"``, ``"dice"``,
            ``"balance"``…). ``None`` (the shipped trainers): ``$MONAI_MIME_WEIGHT_MODE`` if set, else the library
            default (:mod:`nnunet_trainers.class_weights`).
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

    mime_loss_name: ClassVar[str] = "mime_adaptive"
    mime_with_ce: ClassVar[bool] = False
    mime_include_background: ClassVar[bool] = False
    mime_loss_kwargs: ClassVar[dict[str, Any]] = {}
    mime_weight_mode: ClassVar[str | None] = None
    mime_weight_kwargs: ClassVar[dict[str, Any] | None] = None
    mime_rescale_to_patch: ClassVar[bool] = True
    # set by _build_loss: what the checkpoint entry describes besides the loss state
    _mime_state: dict[str, Any] | None = None
    # set by load_checkpoint before initialize() builds the loss: the entry of the checkpoint being loaded
    _mime_checkpoint_state: dict[str, Any] | None = None

    @property
    def mime_needs_class_weights(self) -> bool:
        """Whether the loss takes dataset-level a/b (Mime)."""
        return self.mime_loss_name in MIME_LOSSES

    def _build_loss(self) -> torch.nn.Module:
        """nnU-Net's ``_build_loss`` with the overlap loss replaced (see the module docstring)."""
        from monai_mime import get_loss

        name = self.mime_loss_name
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

    # -- the starting a/b ----------------------------------------------------------------------------------------
    def _mime_class_weights(self) -> dict[str, Any]:
        """a/b (length = number of segmentation heads) from the checkpoint being loaded, else from the statistics.

        Under DDP rank 0 computes them and broadcasts them; an error on rank 0 is raised on every rank.
        """
        stored = self._mime_checkpoint_state
        if stored is not None and "a" in stored and "b" in stored:
            heads = self.label_manager.num_segmentation_heads
            if stored.get("loss") == self.mime_loss_name and len(stored["a"]) == heads:
                mode, _ = requested_weight_mode(self.mime_weight_mode, type(self).__name__)
                if mode is not None and mode != stored.get("weight_mode"):
                    self.print_to_log_file(
                        f"WARNING: the checkpoint's a/b were computed with weight mode {stored.get('weight_mode')!r}; "
                        f"keeping them although {mode!r} is requested now."
                    )
                self.print_to_log_file(
                    f"monai-mime: a/b restored from the checkpoint: a={stored['a']}, b={stored['b']}"
                )
                return {k: stored[k] for k in WEIGHT_STATE_KEYS if k in stored}
            self.print_to_log_file(
                "monai-mime: the checkpoint's a/b do not fit this trainer (other loss or class count); recomputing."
            )
        compute = self._mime_compute_class_weights
        weights = broadcast_from_rank0(compute) if self.is_ddp else compute()
        self.print_to_log_file(
            f"monai-mime: a/b (mode {weights['weight_mode']!r}, patch size {weights['patch_size']}) for "
            f"{weights['class_names']}: a={weights['a']}, b={weights['b']}"
        )
        return weights

    def _mime_compute_class_weights(self) -> dict[str, Any]:
        """a/b of every segmentation head's class (or region) from the fold's statistics; errors on absent ones."""
        return compute_class_weights(
            self,
            self.mime_fold_statistics(),
            requested_weight_mode(self.mime_weight_mode, type(self).__name__),
            requested_weight_kwargs(self.mime_weight_kwargs),
            self.mime_rescale_to_patch,
        )

    def mime_cache_file(self) -> str:
        """The statistics cache of the dataset (:func:`~nnunet_trainers.class_weights.statistics_cache_file`)."""
        return statistics_cache_file(self)

    def mime_fold_statistics(self) -> ClassStatistics:
        """Class statistics of the fold's training cases (:func:`~nnunet_trainers.class_weights.fold_statistics`)."""
        return fold_statistics(self)

    # -- the checkpoint entry -------------------------------------------------------------------------------------
    def mime_checkpoint_state(self) -> dict[str, Any] | None:
        """The entry stored under ``checkpoint["monai_mime"]`` (:mod:`nnunet_trainers.checkpoint`); None before the
        loss is built."""
        if self._mime_state is None:
            return None
        state = dict(self._mime_state)
        loss = self.mime_overlap_loss()
        if loss is not None:
            state["loss_state"] = {k: v.detach().cpu().clone() for k, v in loss.state_dict().items()}
        return state

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's ``save_checkpoint``, then ``checkpoint["monai_mime"]`` (:meth:`mime_checkpoint_state`) added to
        the file it wrote."""
        super().save_checkpoint(filename)
        if self.local_rank == 0 and not self.disable_checkpointing:
            add_checkpoint_entry(filename, self.mime_checkpoint_state())

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """Read ``checkpoint["monai_mime"]`` first (so that ``initialize()`` builds the loss with the stored a/b),
        then nnU-Net's ``load_checkpoint``; a loss already built with other a/b is rebuilt; then the loss state."""
        if isinstance(filename_or_checkpoint, dict):
            state = filename_or_checkpoint.get(CHECKPOINT_KEY)
        else:
            state = read_checkpoint_entry(filename_or_checkpoint)
        if state is not None:
            self._mime_checkpoint_state = dict(state)
        built = self._mime_state
        rebuild = (
            self.was_initialized
            and state is not None
            and self.mime_needs_class_weights
            and built is not None
            and (built.get("a"), built.get("b")) != (state.get("a"), state.get("b"))
        )
        super().load_checkpoint(filename_or_checkpoint)
        if rebuild:
            self.loss = self._build_loss()
        if state is not None and state.get("loss_state") is not None:
            self._mime_restore_loss_state(state)

    def _mime_restore_loss_state(self, state: dict[str, Any]) -> None:
        loss = self.mime_overlap_loss()
        built = self._mime_state
        if loss is None or state.get("loss") != (None if built is None else built.get("loss")):
            self.print_to_log_file("monai-mime: the checkpoint's loss state belongs to another loss; not restored.")
            return
        device = next((t.device for t in loss.state_dict().values()), torch.device("cpu"))
        loss.load_state_dict({k: torch.as_tensor(v).to(device) for k, v in state["loss_state"].items()})
        self.print_to_log_file(f"monai-mime: loss state restored from the checkpoint: {sorted(state['loss_state'])}")

    # -- the built loss and its per-output weights ---------------------------------------------------------------
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
    gradient at running per-voxel averages of the training batches' sums, the setting the ablation chose
    (``docs/explanation/which_ab.md``). Each deep-supervision output gets the weights of its own size; under DDP the
    ranks share the averages; the averages are saved in checkpoints. The fixed-weight Mime has its own trainers
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
