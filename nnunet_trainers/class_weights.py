"""Mime's starting a/b in nnU-Net: from the voxel counts of the current fold's training cases, or from a checkpoint.

The counts of every preprocessed case are cached by :meth:`ClassStatistics.from_nnunet_preprocessed` in
``<nnUNet_preprocessed>/<dataset>/monai_mime_stats_<plans>_<configuration>.json`` (one file for all folds); the fold
takes the subset of its training cases (the trainer's ``do_split``). Under DDP rank 0 computes the a/b and broadcasts
them. The weight mode is, in this order: the class attribute ``mime_weight_mode``, the environment variable
``MONAI_MIME_WEIGHT_MODE`` (read when the loss is built), the default of :meth:`ClassStatistics.weights`; its keyword
arguments come from ``mime_weight_kwargs`` or the JSON object in ``MONAI_MIME_WEIGHT_KWARGS``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join
from torch import distributed as dist

from nnunet_trainers._trainer_base import TrainerBase

if TYPE_CHECKING:
    from monai_mime.stats import ClassStatistics

__all__ = ["ENV_WEIGHT_KWARGS", "ENV_WEIGHT_MODE", "WEIGHT_STATE_KEYS", "ClassWeightsMixin"]

#: Environment variable selecting the a/b weight mode (``ClassStatistics.weights(mode=...)``).
ENV_WEIGHT_MODE = "MONAI_MIME_WEIGHT_MODE"
#: Environment variable with extra keyword arguments of the weight mode, as a JSON object.
ENV_WEIGHT_KWARGS = "MONAI_MIME_WEIGHT_KWARGS"
#: The keys of the checkpoint entry that describe the starting a/b and where they came from.
WEIGHT_STATE_KEYS = (
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


class ClassWeightsMixin(TrainerBase):
    """The a/b part of :class:`~nnunet_trainers.mixins.LossTrainerMixin` (see the module docstring)."""

    mime_weight_mode: ClassVar[str | None] = None
    mime_weight_kwargs: ClassVar[dict[str, Any] | None] = None
    mime_rescale_to_patch: ClassVar[bool] = True
    # set by load_checkpoint before initialize() builds the loss
    _mime_checkpoint_state: dict[str, Any] | None = None

    def _mime_class_weights(self) -> dict[str, Any]:
        """a/b (length = number of segmentation heads) from the checkpoint being loaded, else from the statistics.

        Under DDP rank 0 computes them and broadcasts them; an error on rank 0 is raised on every rank.
        """
        stored = self._mime_checkpoint_state
        if stored is not None and "a" in stored and "b" in stored:
            heads = self.label_manager.num_segmentation_heads
            if stored.get("loss") == self.mime_resolved_loss_name() and len(stored["a"]) == heads:
                mode, _ = self._mime_requested_weight_mode()
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
                key = _label_key(region)
                match = [name for name, value in label_dict.items() if name != "ignore" and _label_key(value) == key]
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

    def mime_fold_statistics(self) -> ClassStatistics:
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
            regions = [_label_key(r) for r in self.label_manager.foreground_regions]
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
        a, b = stats.weights(patch_size=patch, **{**kwargs, "mode": mode})
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


def _label_key(value: Any) -> tuple[int, ...]:
    """A label value or a region (list of label values) as a tuple of ints."""
    return tuple(int(x) for x in value) if isinstance(value, (list, tuple)) else (int(value),)
