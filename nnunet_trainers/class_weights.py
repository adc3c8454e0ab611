"""Mime's starting a/b in nnU-Net: from the voxel counts of the current fold's training cases, or from a checkpoint.

Plain functions over an ``nnUNetTrainer``, called by :class:`~nnunet_trainers.mixins.LossTrainerMixin`. The counts of
every preprocessed case are cached by :meth:`ClassStatistics.from_nnunet_preprocessed` in
``<nnUNet_preprocessed>/<dataset>/monai_mime_stats_<plans>_<configuration>.json`` (one file for all folds); the fold
takes the subset of its training cases (the trainer's ``do_split``). Under DDP rank 0 computes the a/b and broadcasts
them (:func:`broadcast_from_rank0`).

The weight mode is chosen in one of two ways: the class attribute ``mime_weight_mode`` of a trainer subclass, or, for
the shipped trainers (which leave it ``None``), the environment variable ``MONAI_MIME_WEIGHT_MODE``, read when the
loss is built; with neither, the default of :meth:`ClassStatistics.weights`. Its keyword arguments come the same two
ways: ``mime_weight_kwargs``, or the JSON object in ``MONAI_MIME_WEIGHT_KWARGS``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join
from torch import distributed as dist

if TYPE_CHECKING:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from monai_mime.stats import ClassStatistics

__all__ = [
    "ENV_WEIGHT_KWARGS",
    "ENV_WEIGHT_MODE",
    "WEIGHT_STATE_KEYS",
    "broadcast_from_rank0",
    "class_names",
    "compute_class_weights",
    "fold_statistics",
    "requested_weight_kwargs",
    "requested_weight_mode",
    "statistics_cache_file",
]

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


def requested_weight_mode(attribute: str | None, owner: str) -> tuple[str | None, str]:
    """(mode, where it came from): the class attribute of trainer class ``owner``, else ``$MONAI_MIME_WEIGHT_MODE``,
    else ``None`` (the default of :meth:`ClassStatistics.weights`)."""
    if attribute is not None:
        return attribute, f"{owner}.mime_weight_mode"
    env = os.environ.get(ENV_WEIGHT_MODE, "").strip()
    if env:
        return env, f"${ENV_WEIGHT_MODE}"
    return None, "default of ClassStatistics.weights"


def requested_weight_kwargs(attribute: dict[str, Any] | None) -> dict[str, Any]:
    """The mode's keyword arguments: the class attribute, else the JSON object in ``$MONAI_MIME_WEIGHT_KWARGS``."""
    if attribute is not None:
        return dict(attribute)
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


def broadcast_from_rank0(compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()`` on rank 0, broadcast to every rank; an error on rank 0 is raised on every rank."""
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = compute()
        except Exception as error:  # noqa: BLE001 -- re-raised on every rank below
            box[0] = {"error": f"{type(error).__name__}: {error}"}
    dist.broadcast_object_list(box, src=0)
    weights: dict[str, Any] = box[0]
    if "error" in weights:
        raise RuntimeError(f"monai-mime: computing a/b on rank 0 failed: {weights['error']}")
    return weights


def class_names(trainer: nnUNetTrainer) -> list[str]:
    """One name per segmentation head's statistics entry: labels 0..K-1, or the foreground regions."""
    label_dict = trainer.dataset_json["labels"]
    label_manager = trainer.label_manager
    if label_manager.has_regions:
        names = []
        for region in label_manager.foreground_regions:
            key = _label_key(region)
            match = [name for name, value in label_dict.items() if name != "ignore" and _label_key(value) == key]
            names.append(match[0] if match else str(key))
        return names
    by_value = {int(v): k for k, v in label_dict.items() if k != "ignore" and not isinstance(v, (list, tuple))}
    return [by_value.get(label, str(label)) for label in label_manager.all_labels]


def statistics_cache_file(trainer: nnUNetTrainer) -> str:
    """``<preprocessed dataset>/monai_mime_stats_<plans>_<configuration>.json``: the counts of every case.

    One file serves every fold (each fold takes the subset of its training cases). It is
    :meth:`ClassStatistics.from_nnunet_preprocessed`'s cache: checksummed, and recounted when a preprocessed
    file or the counting options change.
    """
    return join(
        trainer.preprocessed_dataset_folder_base,
        f"monai_mime_stats_{trainer.plans_manager.plans_name}_{trainer.configuration_name}.json",
    )


def fold_statistics(trainer: nnUNetTrainer) -> ClassStatistics:
    """Class statistics (label values 0..K-1) of the training cases of the trainer's fold.

    The cases are the trainer's own ``do_split()`` (``splits_final.json``, a custom split file, or an overridden
    ``do_split``); the counts come from :meth:`ClassStatistics.from_nnunet_preprocessed` over all preprocessed
    cases, cached in :func:`statistics_cache_file`, and the fold takes the subset of its training cases.
    """
    from nnunetv2.configuration import default_num_processes

    from monai_mime.stats import ClassStatistics

    tr_keys, _ = trainer.do_split()
    tr_keys = [str(k) for k in tr_keys]
    cache = statistics_cache_file(trainer)
    trainer.print_to_log_file(f"monai-mime: class voxel counts of the preprocessed cases (cache {cache})")
    every_case = ClassStatistics.from_nnunet_preprocessed(
        trainer.preprocessed_dataset_folder_base,
        configuration=trainer.configuration_name,
        fold="all",
        plans_identifier=trainer.plans_manager.plans_name,
        num_workers=default_num_processes,
        cache=cache,
    )
    missing = sorted(set(tr_keys) - set(map(str, every_case.case_ids)))
    if missing:
        raise RuntimeError(
            f"monai-mime: training cases of fold {trainer.fold} are not preprocessed: {', '.join(missing[:5])}"
        )
    return every_case.subset(sorted(set(tr_keys)))


def compute_class_weights(
    trainer: nnUNetTrainer,
    stats: ClassStatistics,
    mode_and_source: tuple[str | None, str],
    kwargs: dict[str, Any],
    rescale_to_patch: bool,
) -> dict[str, Any]:
    """a/b of every segmentation head's class (or region) from ``stats``, with where they came from (the checkpoint
    entry's :data:`WEIGHT_STATE_KEYS`); an error naming the classes absent from the fold."""
    names = class_names(trainer)
    label_manager = trainer.label_manager
    if label_manager.has_regions:
        regions = [_label_key(r) for r in label_manager.foreground_regions]
        stats = stats.regions(regions, names=names)
    counts = np.asarray(stats.total_counts)
    if counts.shape[0] != len(names):
        raise RuntimeError(
            f"monai-mime: statistics have {counts.shape[0]} classes/regions but the trainer has {len(names)}."
        )
    absent = [f"{k} ({names[k]})" for k in range(len(names)) if counts[k] == 0]
    if absent:
        kind = "region" if label_manager.has_regions else "class"
        message = (
            f"monai-mime: {kind} {', '.join(absent)} does not occur in any of the {stats.num_images} training "
            f"cases of fold {trainer.fold}, so Mime has no finite a/b for it. Use another fold or a custom "
            f"splits_final.json that puts a case containing it in the training set, or train with another loss."
        )
        trainer.print_to_log_file(message)
        raise RuntimeError(message)
    mode, source = mode_and_source
    if mode is None:
        from monai_mime.stats import DEFAULT_MODE

        mode = DEFAULT_MODE
    patch = [int(p) for p in trainer.configuration_manager.patch_size] if rescale_to_patch else None
    a, b = stats.weights(patch_size=patch, **{**kwargs, "mode": mode})
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a > 0) and np.all(b > 0)):
        raise RuntimeError(f"monai-mime: weights(mode={mode!r}) gave non-finite or non-positive a={a}, b={b}.")
    trainer.print_to_log_file(f"monai-mime: weight mode {mode!r} from {source}")
    return {
        "a": a.tolist(),
        "b": b.tolist(),
        "weight_mode": mode,
        "weight_kwargs": kwargs,
        "patch_size": patch,
        "class_names": names,
        "class_counts": counts.astype(np.int64).tolist(),
        "num_training_cases": int(stats.num_images),
        "fold": trainer.fold,
        "statistics_file": statistics_cache_file(trainer),
        "statistics_fingerprint": getattr(stats, "fingerprint", None),
    }


def _label_key(value: Any) -> tuple[int, ...]:
    """A label value or a region (list of label values) as a tuple of ints."""
    return tuple(int(x) for x in value) if isinstance(value, (list, tuple)) else (int(value),)
