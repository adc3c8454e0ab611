"""nnU-Net v2 datasets as statistics sources: label info from ``dataset.json`` and the training cases of a fold.

The fold logic is nnU-Net's own (``splits_final.json``, ``generate_crossval_split``, the seeded 80:20 split for a
fold beyond the file), so the counts are those of the cases ``nnUNetTrainer.do_split`` trains on.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from monai_mime.stats.readers import strip_ending

__all__ = [
    "nnunet_label_info",
    "nnunet_raw_label_files",
    "nnunet_training_cases",
    "read_dataset_json",
    "require_nnunet",
]


def nnunet_label_info(dataset_json: Mapping[str, Any]) -> tuple[int, int | None, list[str]]:
    """``(num_classes, ignore_label, class_names)`` from an nnU-Net ``dataset.json``, as nnU-Net's LabelManager.

    Region entries (lists of labels) count their labels; a label named ``"ignore"`` is the ignore label and must
    be the highest value (``max(labels) + 1``).
    """
    labels = dict(dataset_json["labels"])
    ignore = labels.pop("ignore", None)
    values = {int(v) for r in labels.values() for v in (r if isinstance(r, (list, tuple)) else [r])}
    k = max(values) + 1
    if ignore is not None and int(ignore) != k:
        raise ValueError(f"dataset.json: the ignore label must be the highest label value ({k}), got {ignore}")
    names = [str(i) for i in range(k)]
    for n, v in labels.items():
        if not isinstance(v, (list, tuple)):
            names[int(v)] = n
    return k, None if ignore is None else int(ignore), names


def _write_splits(path: Path, splits: list[dict[str, list[str]]]) -> None:
    """Write ``splits_final.json`` with nnU-Net's ``save_json`` (same format as the trainer), atomically."""
    from batchgenerators.utilities.file_and_folder_operations import save_json

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_json(splits, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def nnunet_training_cases(
    dataset_folder: str | os.PathLike, data_folder: str | os.PathLike, fold: int | str
) -> list[str]:
    """The training case identifiers of ``fold``, exactly as ``nnUNetTrainer.do_split`` chooses them.

    ``fold="all"``: every case. Otherwise ``splits_final.json`` in ``dataset_folder`` (created like nnU-Net does, a
    seeded 5-fold ``generate_crossval_split``, when missing); a fold beyond the file's splits gets nnU-Net's seeded
    random 80:20 split (with a warning, as nnU-Net prints).
    """
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    identifiers = sorted(infer_dataset_class(str(data_folder)).get_identifiers(str(data_folder)))
    if not identifiers:
        raise ValueError(f"{data_folder}: no preprocessed cases")
    if fold == "all":
        return identifiers
    fold = int(fold)
    splits_file = Path(dataset_folder) / "splits_final.json"
    if splits_file.is_file():
        splits = json.loads(splits_file.read_text())
    else:
        splits = generate_crossval_split(list(np.sort(identifiers)), seed=12345, n_splits=5)
        _write_splits(splits_file, splits)
    if fold < len(splits):
        return [str(c) for c in splits[fold]["train"]]
    warnings.warn(
        f"{splits_file} has {len(splits)} splits; fold {fold} uses nnU-Net's seeded random 80:20 split", stacklevel=2
    )
    rnd = np.random.RandomState(seed=12345 + fold)
    keys = np.sort(identifiers)
    return [str(keys[i]) for i in rnd.choice(len(keys), int(len(keys) * 0.8), replace=False)]


def read_dataset_json(folder: Path) -> dict[str, Any]:
    """``folder/dataset.json``; FileNotFoundError naming the folder when it is not an nnU-Net dataset."""
    path = folder / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no dataset.json (not an nnU-Net dataset folder)")
    return json.loads(path.read_text())


def nnunet_raw_label_files(folder: Path, dataset_json: Mapping[str, Any]) -> dict[str, Path]:
    """Case id → label file of an nnU-Net raw dataset: ``dataset.json``'s ``"dataset"`` entries if it has them,
    else the files of ``labelsTr`` with the dataset's file ending, sorted."""
    ending = dataset_json.get("file_ending", ".nii.gz")
    if "dataset" in dataset_json:
        files = {c: folder / e["label"] for c, e in dataset_json["dataset"].items()}
    else:
        files = {strip_ending(p.name, [ending]): p for p in sorted((folder / "labelsTr").glob(f"*{ending}"))}
    if not files:
        raise ValueError(f"{folder}/labelsTr: no label files ending in {ending}")
    return files


def require_nnunet() -> None:
    """ImportError with the install command when nnunetv2 is missing."""
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        raise ImportError("nnU-Net preprocessed datasets need nnunetv2: pip install 'monai-mime[nnunet]'") from None
