"""What ``ClassStatistics.from_nnunet_*`` do: count an nnU-Net v2 raw dataset, or one fold of a preprocessed one.

They name the label files (raw) or nnU-Net's own case files (preprocessed, read through nnU-Net's dataset class)
and count them through :func:`~monai_mime.stats.sources.from_files`'s cached file counting; ``dataset.json`` and
the fold rules are :mod:`~monai_mime.stats.nnunet_folds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from monai_mime.stats.nnunet_folds import (
    nnunet_label_info,
    nnunet_raw_label_files,
    nnunet_training_cases,
    read_dataset_json,
    require_nnunet,
)
from monai_mime.stats.readers import PathLike
from monai_mime.stats.sources import CacheArg, from_files

if TYPE_CHECKING:
    from monai_mime.stats.counts import ClassStatistics

__all__ = ["from_nnunet_preprocessed", "from_nnunet_raw"]


def from_nnunet_raw(
    cls: type[ClassStatistics],
    dataset_folder: PathLike,
    num_classes: int | None,
    ignore_index: int | None,
    cases: Sequence[str] | None,
    num_workers: int | None,
    cache: CacheArg,
    progress: bool,
) -> ClassStatistics:
    """``ClassStatistics.from_nnunet_raw`` (see its docstring)."""
    folder = Path(dataset_folder).resolve()
    dj = read_dataset_json(folder)
    k, ignore, names = nnunet_label_info(dj)
    for given, declared, what in ((num_classes, k, "num_classes"), (ignore_index, ignore, "ignore_index")):
        if given is not None and given != declared:
            raise ValueError(f"{folder}/dataset.json declares {what}={declared}, but {what}={given} was passed")
    files = nnunet_raw_label_files(folder, dj)
    if cases is not None:
        missing = sorted(set(cases) - set(files))
        if missing:
            raise ValueError(f"{folder}: cases not in the dataset: {', '.join(missing[:5])}")
        files = {c: files[c] for c in cases}
    paths = list(files.values())
    return from_files(
        cls,
        paths,
        list(files),
        "file",
        fingerprint_files=paths + [folder / "dataset.json"],
        source=f"nnunet_raw:{Path(dataset_folder)}",
        root=folder,
        num_classes=k,
        ignore_index=ignore,
        cache=cache,
        num_workers=num_workers,
        progress=progress,
        class_names=names,
        options=None if cases is None else {"cases": list(files)},
    )


def from_nnunet_preprocessed(
    cls: type[ClassStatistics],
    preprocessed_dataset_folder: PathLike,
    configuration: str | None,
    fold: int | str,
    plans_identifier: str,
    num_workers: int | None,
    cache: CacheArg,
    progress: bool,
) -> ClassStatistics:
    """``ClassStatistics.from_nnunet_preprocessed`` (see its docstring)."""
    require_nnunet()
    from nnunetv2.training.dataloading.nnunet_dataset import file_ending_dataset_mapping, infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(preprocessed_dataset_folder).resolve()
    plans_file = folder / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file}: no such plans file (run nnUNetv2_plan_and_preprocess)")
    plans = PlansManager(str(plans_file))
    if configuration is None:
        done = [
            c
            for c in ("3d_fullres", "2d", "3d_lowres")
            if c in plans.available_configurations and (folder / plans.get_configuration(c).data_identifier).is_dir()
        ]
        configuration = done[0] if done else "3d_fullres"
    if configuration not in plans.available_configurations:
        raise ValueError(
            f"{plans_file}: no configuration {configuration!r} (available: {', '.join(plans.available_configurations)})"
        )
    data_folder = folder / plans.get_configuration(configuration).data_identifier
    if not data_folder.is_dir():
        raise FileNotFoundError(f"{data_folder}: not preprocessed (run nnUNetv2_preprocess -c {configuration})")
    k, ignore, names = nnunet_label_info(read_dataset_json(folder))
    case_ids = nnunet_training_cases(folder, data_folder, fold)
    wanted = set(case_ids)
    files = [p for p in data_folder.iterdir() if p.name.split(".")[0].removesuffix("_seg") in wanted]
    ending = {v: e for e, v in file_ending_dataset_mapping.items()}[infer_dataset_class(str(data_folder))]
    items = [(str(data_folder), c, ending) for c in case_ids]
    return from_files(
        cls,
        items,
        case_ids,
        "nnunet",
        fingerprint_files=files,
        source=f"nnunet_preprocessed:{Path(preprocessed_dataset_folder)}",
        root=folder,
        num_classes=k,
        ignore_index=ignore,
        cache=cache,
        num_workers=num_workers,
        progress=progress,
        negative_background=True,
        class_names=names,
        options={
            "configuration": configuration,
            "fold": str(fold),
            "plans": plans_identifier,
            "cases": sorted(case_ids),
        },
    )
