"""nnU-Net v2 trainers with the Mime (Eq. 3), V-Net Dice (Eq. 5) and Generalized Dice (Eq. 4) losses.

Six trainers, chosen by name with ``nnUNetv2_train DATASET CONFIG FOLD -tr <name>`` once
``nnUNet_extTrainer=$(monai-mime nnunet-path)`` is set (see :mod:`nnunet_trainers.discovery`):

==========================  ===============================================================================
``nnUNetTrainerMime``       Mime (Eq. 3), a/b from the fold's training cases
``nnUNetTrainerMimeCE``     Mime + cross-entropy (weights 1 and 1, as nnU-Net's default Dice + CE)
``nnUNetTrainerVNet``       V-Net Dice (Eq. 5, squared probabilities in the denominator)
``nnUNetTrainerVNetCE``     V-Net Dice + cross-entropy
``nnUNetTrainerGDL``        Generalized Dice (Eq. 4, ``w_k = 1/G_k²``)
``nnUNetTrainerGDLCE``      Generalized Dice + cross-entropy
==========================  ===============================================================================

They leave ``__init__`` alone and override only ``_build_loss``, ``save_checkpoint`` and ``load_checkpoint``, via
:class:`LossTrainerMixin`. Put a mixin first to give any trainer of your own one of these losses::

    class MyTrainer(MimeLossMixin, nnUNetTrainer_250epochs):
        mime_weight_mode = "dice"

The loss mirrors nnU-Net's default (``nnUNetTrainer._build_loss``): deep supervision with nnU-Net's weights, the
ignore label, region-based training (sigmoid outputs, one per region), ``batch_dice`` from the plans, DDP with the
batch sums all-gathered (:mod:`nnunet_trainers.losses`), float16 autocast on CUDA. Background handling follows
nnU-Net: without regions class 0 takes no part (``do_bg=False``), with regions every region does.

Mime's a/b (``losses.md``) come from the voxel counts of the training cases of the current fold (the trainer's
``do_split``: nnU-Net's ``splits_final.json`` or a custom one), of the region masks for region-based training. The
counts of every preprocessed case are cached by :meth:`ClassStatistics.from_nnunet_preprocessed` in
``<nnUNet_preprocessed>/<dataset>/monai_mime_stats_<plans>_<configuration>.json`` (one file for all folds). They are
computed on rank 0 and broadcast under DDP, and stored in every checkpoint (key ``"monai_mime"``): ``--c``, ``--val``
and a reloaded checkpoint reuse them, prediction needs no loss at all. The weight mode is, in this order: the class
attribute ``mime_weight_mode`` of a subclass, the environment variable ``MONAI_MIME_WEIGHT_MODE``, the default of
:meth:`ClassStatistics.weights` ("mean"); keyword arguments of the mode come from ``mime_weight_kwargs`` or the JSON
object in ``MONAI_MIME_WEIGHT_KWARGS``.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import distributed as dist
from torch._dynamo import OptimizedModule

from nnunet_trainers.losses import NnUNetLossAdapter, deep_supervision_weights, wrap_deep_supervision

__all__ = [
    "CHECKPOINT_KEY",
    "ENV_WEIGHT_KWARGS",
    "ENV_WEIGHT_MODE",
    "GDLCELossMixin",
    "GDLLossMixin",
    "LossTrainerMixin",
    "MimeCELossMixin",
    "MimeLossMixin",
    "VNetCELossMixin",
    "VNetLossMixin",
    "nnUNetTrainerGDL",
    "nnUNetTrainerGDLCE",
    "nnUNetTrainerMime",
    "nnUNetTrainerMimeCE",
    "nnUNetTrainerVNet",
    "nnUNetTrainerVNetCE",
    "TRAINER_NAMES",
]

#: Key of this package's entry in nnU-Net checkpoints.
CHECKPOINT_KEY = "monai_mime"
#: Environment variable selecting the a/b weight mode (``ClassStatistics.weights(mode=...)``).
ENV_WEIGHT_MODE = "MONAI_MIME_WEIGHT_MODE"
#: Environment variable with extra keyword arguments of the weight mode, as a JSON object.
ENV_WEIGHT_KWARGS = "MONAI_MIME_WEIGHT_KWARGS"
#: Version of the checkpoint entry's layout.
_STATE_VERSION = 1
#: the losses that take dataset-level a/b (Mime with fixed weights, and with weights that follow Eq. 2)
MIME_LOSSES = ("mime", "mime_adaptive")


class LossTrainerMixin:
    """Give an ``nnUNetTrainer`` (sub)class one of the :mod:`monai_mime` losses. Put it *first* in the bases.

    Class attributes (override them in a subclass):

    Attributes:
        mime_loss_name: a name of :func:`monai_mime.get_loss` (``"mime"``, ``"vnet"``, ``"gdl"``, ``"dice"``, or one
            you registered). ``"mime"`` gets its a/b from the fold's statistics.
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
            ``{"smooth_nr": 0}``). ``validate`` defaults to False here: the per-call input checks cost host syncs.

    ``batch`` follows the plans' ``batch_dice`` for the Dice variants (V-Net, GDL), as nnU-Net's Dice does. Mime is
    linear in the probabilities, so summing its sums over the batch first (``batch=True``) changes only its scale
    (the *sum* of the per-image losses instead of their mean, B times larger); it therefore always uses
    ``batch=False``, the mean over images, whose per-voxel gradient ``a_k / (B K')`` is of the size of the batch-Dice
    gradient ``≈ 2 / (B Ḡ_k K')`` that the a/b of mode "mean" are scaled to. ``mime_loss_kwargs={"batch": True}``
    overrides this.
    """

    mime_loss_name: ClassVar[str] = "mime"
    mime_with_ce: ClassVar[bool] = False
    mime_weight_mode: ClassVar[str | None] = None
    mime_weight_kwargs: ClassVar[dict[str, Any] | None] = None
    mime_rescale_to_patch: ClassVar[bool] = True
    mime_include_background: ClassVar[bool] = False
    mime_loss_kwargs: ClassVar[dict[str, Any]] = {}

    # set by load_checkpoint before initialize() builds the loss; set by _build_loss after
    _mime_checkpoint_state: dict[str, Any] | None = None
    _mime_state: dict[str, Any] | None = None

    # -- loss ----------------------------------------------------------------------------------------------------
    @property
    def mime_needs_class_weights(self) -> bool:
        """Whether the loss takes dataset-level a/b (Mime)."""
        return self.mime_loss_name in MIME_LOSSES

    def _build_loss(self) -> torch.nn.Module:
        """nnU-Net's ``_build_loss`` with the overlap loss replaced (see the module docstring)."""
        from monai_mime import get_loss

        label_manager = self.label_manager
        regions = bool(label_manager.has_regions)
        include_background = True if regions else bool(self.mime_include_background)
        loss_kwargs: dict[str, Any] = dict(
            include_background=include_background,
            to_onehot_y=not regions,
            softmax=not regions,
            sigmoid=regions,
            batch=bool(self.configuration_manager.batch_dice) and self.mime_loss_name not in MIME_LOSSES,
            reduction="mean",
            validate=False,
        )
        loss_kwargs.update(self.mime_loss_kwargs)
        include_background = bool(loss_kwargs["include_background"])
        state: dict[str, Any] = {
            "version": _STATE_VERSION,
            "loss": self.mime_loss_name,
            "with_ce": bool(self.mime_with_ce),
            "include_background": include_background,
            "region_based": regions,
            "batch_dice": loss_kwargs["batch"],
        }
        if self.mime_needs_class_weights:
            weights = self._mime_class_weights()
            state.update(weights)
            a, b = np.asarray(weights["a"]), np.asarray(weights["b"])
            if not include_background:
                a, b = a[1:], b[1:]
            loss_kwargs.update(a=a, b=b)
        loss = get_loss(self.mime_loss_name, **loss_kwargs)
        adapter = NnUNetLossAdapter(
            loss,
            region_based=regions,
            ignore_label=label_manager.ignore_label,
            ddp=self.is_ddp,
            weight_dice=1.0,
            weight_ce=1.0 if self.mime_with_ce else 0.0,
        )
        result: torch.nn.Module = adapter
        if self.enable_deep_supervision:
            num_outputs = len(self._get_deep_supervision_scales())
            weights_ds = deep_supervision_weights(num_outputs, ddp=self.is_ddp, compiled=self._do_i_compile())
            result = wrap_deep_supervision(adapter, weights_ds)
        self._mime_state = state
        self.print_to_log_file(f"monai-mime loss: {loss!r} (cross-entropy: {bool(self.mime_with_ce)})")
        return result.to(self.device)

    # -- a / b ---------------------------------------------------------------------------------------------------
    def _mime_class_weights(self) -> dict[str, Any]:
        """a/b (length = number of segmentation heads) from the checkpoint being loaded, else from the statistics.

        Under DDP rank 0 computes them and broadcasts them; an error on rank 0 is raised on every rank.
        """
        stored = self._mime_checkpoint_state
        if stored is not None and "a" in stored and "b" in stored:
            heads = self.label_manager.num_segmentation_heads
            if stored.get("loss") == self.mime_loss_name and len(stored["a"]) == heads:
                mode, _ = self._mime_requested_weight_mode()
                if mode is not None and mode != stored.get("weight_mode"):
                    self.print_to_log_file(
                        f"WARNING: the checkpoint's a/b were computed with weight mode {stored.get('weight_mode')!r}; "
                        f"keeping them although {mode!r} is requested now."
                    )
                self.print_to_log_file(
                    f"monai-mime: a/b restored from the checkpoint: a={stored['a']}, b={stored['b']}"
                )
                return {k: stored[k] for k in _WEIGHT_STATE_KEYS if k in stored}
            self.print_to_log_file(
                "monai-mime: the checkpoint's a/b do not fit this trainer (other loss or class count); recomputing."
            )
        if not self.is_ddp:
            weights = self._mime_compute_class_weights()
        else:
            box: list[Any] = [None]
            if dist.get_rank() == 0:
                try:
                    box[0] = self._mime_compute_class_weights()
                except Exception as error:  # noqa: BLE001 -- re-raised on every rank below
                    box[0] = {"error": f"{type(error).__name__}: {error}"}
            dist.broadcast_object_list(box, src=0)
            weights = box[0]
            if "error" in weights:
                raise RuntimeError(f"monai-mime: computing a/b on rank 0 failed: {weights['error']}")
        self.print_to_log_file(
            f"monai-mime: a/b (mode {weights['weight_mode']!r}, patch size {weights['patch_size']}) for "
            f"{weights['class_names']}: a={weights['a']}, b={weights['b']}"
        )
        return weights

    def _mime_requested_weight_mode(self) -> tuple[str | None, str]:
        """(mode, where it came from): class attribute, then ``$MONAI_MIME_WEIGHT_MODE``, then ``None``."""
        if self.mime_weight_mode is not None:
            return self.mime_weight_mode, f"{type(self).__name__}.mime_weight_mode"
        env = os.environ.get(ENV_WEIGHT_MODE, "").strip()
        if env:
            return env, f"${ENV_WEIGHT_MODE}"
        return None, "default of ClassStatistics.weights"

    def _mime_requested_weight_kwargs(self) -> dict[str, Any]:
        if self.mime_weight_kwargs is not None:
            return dict(self.mime_weight_kwargs)
        env = os.environ.get(ENV_WEIGHT_KWARGS, "").strip()
        if not env:
            return {}
        try:
            value = json.loads(env)
        except json.JSONDecodeError as error:
            raise ValueError(f"${ENV_WEIGHT_KWARGS} must be a JSON object, got {env!r}: {error}") from None
        if not isinstance(value, dict):
            raise ValueError(f"${ENV_WEIGHT_KWARGS} must be a JSON object, got {env!r}.")
        return value

    def _mime_class_names(self) -> list[str]:
        """One name per segmentation head's statistics entry: labels 0..K-1, or the foreground regions."""
        label_dict = self.dataset_json["labels"]
        if self.label_manager.has_regions:
            names = []
            for region in self.label_manager.foreground_regions:
                key = tuple(region) if isinstance(region, (list, tuple)) else (int(region),)
                match = [
                    name
                    for name, value in label_dict.items()
                    if name != "ignore" and (tuple(value) if isinstance(value, (list, tuple)) else (int(value),)) == key
                ]
                names.append(match[0] if match else str(key))
            return names
        by_value = {int(v): k for k, v in label_dict.items() if k != "ignore" and not isinstance(v, (list, tuple))}
        return [by_value.get(label, str(label)) for label in self.label_manager.all_labels]

    def mime_cache_file(self) -> str:
        """``<preprocessed dataset>/monai_mime_stats_<plans>_<configuration>.json``: the counts of every case.

        One file serves every fold (each fold takes the subset of its training cases). It is
        :meth:`ClassStatistics.from_nnunet_preprocessed`'s cache: checksummed, and recounted when a preprocessed
        file or the counting options change.
        """
        return join(
            self.preprocessed_dataset_folder_base,
            f"monai_mime_stats_{self.plans_manager.plans_name}_{self.configuration_name}.json",
        )

    def mime_fold_statistics(self):  # -> monai_mime.stats.ClassStatistics
        """Class statistics (label values 0..K-1) of the training cases of the current fold.

        The cases are the trainer's own ``do_split()`` (``splits_final.json``, a custom split file, or an overridden
        ``do_split``); the counts come from :meth:`ClassStatistics.from_nnunet_preprocessed` over all preprocessed
        cases, cached in :meth:`mime_cache_file`, and the fold takes the subset of its training cases.
        """
        from nnunetv2.configuration import default_num_processes

        from monai_mime.stats import ClassStatistics

        tr_keys, _ = self.do_split()
        tr_keys = [str(k) for k in tr_keys]
        cache = self.mime_cache_file()
        self.print_to_log_file(f"monai-mime: class voxel counts of the preprocessed cases (cache {cache})")
        every_case = ClassStatistics.from_nnunet_preprocessed(
            self.preprocessed_dataset_folder_base,
            configuration=self.configuration_name,
            fold="all",
            plans_identifier=self.plans_manager.plans_name,
            num_workers=default_num_processes,
            cache=cache,
        )
        missing = sorted(set(tr_keys) - set(map(str, every_case.case_ids)))
        if missing:
            raise RuntimeError(
                f"monai-mime: training cases of fold {self.fold} are not preprocessed: {', '.join(missing[:5])}"
            )
        return every_case.subset(sorted(set(tr_keys)))

    def _mime_compute_class_weights(self) -> dict[str, Any]:
        """a/b of every segmentation head's class (or region) from the fold's statistics; errors on absent ones."""
        stats = self.mime_fold_statistics()
        names = self._mime_class_names()
        if self.label_manager.has_regions:
            regions = [
                tuple(int(x) for x in r) if isinstance(r, (list, tuple)) else (int(r),)
                for r in self.label_manager.foreground_regions
            ]
            stats = stats.regions(regions, names=names)
        counts = np.asarray(stats.total_counts)
        if counts.shape[0] != len(names):
            raise RuntimeError(
                f"monai-mime: statistics have {counts.shape[0]} classes/regions but the trainer has {len(names)}."
            )
        absent = [f"{k} ({names[k]})" for k in range(len(names)) if counts[k] == 0]
        if absent:
            kind = "region" if self.label_manager.has_regions else "class"
            message = (
                f"monai-mime: {kind} {', '.join(absent)} does not occur in any of the {stats.num_images} training "
                f"cases of fold {self.fold}, so Mime has no finite a/b for it. Use another fold or a custom "
                f"splits_final.json that puts a case containing it in the training set, or train with another loss."
            )
            self.print_to_log_file(message)
            raise RuntimeError(message)
        mode, source = self._mime_requested_weight_mode()
        kwargs = self._mime_requested_weight_kwargs()
        if mode is None:
            from monai_mime.stats import DEFAULT_MODE

            mode = DEFAULT_MODE
        patch = [int(p) for p in self.configuration_manager.patch_size] if self.mime_rescale_to_patch else None
        call: dict[str, Any] = dict(kwargs)
        if mode is not None:
            call["mode"] = mode
        a, b = stats.weights(patch_size=patch, **call)
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a > 0) and np.all(b > 0)):
            raise RuntimeError(f"monai-mime: weights(mode={mode!r}) gave non-finite or non-positive a={a}, b={b}.")
        self.print_to_log_file(f"monai-mime: weight mode {mode!r} from {source}")
        return {
            "a": a.tolist(),
            "b": b.tolist(),
            "weight_mode": mode,
            "weight_kwargs": kwargs,
            "patch_size": patch,
            "class_names": names,
            "class_counts": counts.astype(np.int64).tolist(),
            "num_training_cases": int(stats.num_images),
            "fold": self.fold,
            "statistics_file": self.mime_cache_file(),
            "statistics_fingerprint": getattr(stats, "fingerprint", None),
        }

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def mime_checkpoint_state(self) -> dict[str, Any] | None:
        """The entry stored under ``checkpoint["monai_mime"]``: loss name, a/b, weight mode and where they came from."""
        return None if self._mime_state is None else dict(self._mime_state)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's ``save_checkpoint`` (2.8) plus ``checkpoint["monai_mime"]`` (:meth:`mime_checkpoint_state`)."""
        if self.local_rank == 0:
            if not self.disable_checkpointing:
                mod = self.network.module if self.is_ddp else self.network
                if isinstance(mod, OptimizedModule):
                    mod = mod._orig_mod
                checkpoint = {
                    "network_weights": mod.state_dict(),
                    "optimizer_state": self.optimizer.state_dict(),
                    "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
                    "logging": self.logger.get_checkpoint(),
                    "_best_ema": self._best_ema,
                    "current_epoch": self.current_epoch + 1,
                    "init_args": self.my_init_kwargs,
                    "trainer_name": self.__class__.__name__,
                    "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
                    CHECKPOINT_KEY: self.mime_checkpoint_state(),
                }
                torch.save(checkpoint, filename)
            else:
                self.print_to_log_file("No checkpoint written, checkpointing is disabled")

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """Read ``checkpoint["monai_mime"]`` first (so that ``initialize()`` builds the loss with the stored a/b),
        then nnU-Net's ``load_checkpoint``. If the loss was already built with other a/b, it is rebuilt."""
        if isinstance(filename_or_checkpoint, dict):
            state = filename_or_checkpoint.get(CHECKPOINT_KEY)
        else:
            state = _read_checkpoint_entry(filename_or_checkpoint)
        if state is not None:
            self._mime_checkpoint_state = dict(state)
        rebuild = (
            self.was_initialized
            and state is not None
            and self.mime_needs_class_weights
            and self._mime_state is not None
            and (self._mime_state.get("a"), self._mime_state.get("b")) != (state.get("a"), state.get("b"))
        )
        super().load_checkpoint(filename_or_checkpoint)
        if rebuild:
            self.loss = self._build_loss()


_WEIGHT_STATE_KEYS = (
    "a",
    "b",
    "weight_mode",
    "weight_kwargs",
    "patch_size",
    "class_names",
    "class_counts",
    "num_training_cases",
    "fold",
    "statistics_file",
    "statistics_fingerprint",
)


def _read_checkpoint_entry(filename: str) -> dict[str, Any] | None:
    """``checkpoint["monai_mime"]`` of a checkpoint file, memory-mapped so the weights are not read."""
    try:
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, ValueError):  # legacy (non-zip) format cannot be memory-mapped
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
    entry = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    return None if entry is None else dict(entry)


class MimeLossMixin(LossTrainerMixin):
    """Mime (Eq. 3) with a/b from the fold's training cases.

    By default the loss is :class:`monai_mime.AdaptiveMimeLoss` (``"mime_adaptive"``): it starts from the a/b of the
    weight mode and then follows Eq. 2 at running averages of the training batches' sums — the setting the ablation
    on ACDC and on the rare-class data chose (README, "Which a/b?"). Fixed weights, the paper's Mime as written, are
    one switch away: ``mime_loss_name = "mime"`` in a subclass, or ``MONAI_MIME_LOSS=mime`` in the environment.
    """

    mime_loss_name = os.environ.get("MONAI_MIME_LOSS", "mime_adaptive")


class MimeCELossMixin(MimeLossMixin):
    """Mime + cross-entropy."""

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


class nnUNetTrainerMime(MimeLossMixin, nnUNetTrainer):
    """nnU-Net's default trainer with the Mime loss (Eq. 3) instead of Dice + CE."""


class nnUNetTrainerMimeCE(MimeCELossMixin, nnUNetTrainer):
    """nnU-Net's default trainer with Mime + cross-entropy (weights 1, 1)."""


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
    "nnUNetTrainerVNet",
    "nnUNetTrainerVNetCE",
    "nnUNetTrainerGDL",
    "nnUNetTrainerGDLCE",
)
