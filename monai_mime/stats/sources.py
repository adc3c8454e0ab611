"""The ``ClassStatistics.from_*`` constructors: arrays, folders, MONAI data dicts, nnU-Net raw and preprocessed.

Each constructor names its items and a reader (:mod:`~monai_mime.stats.readers`), counts them through
:func:`~monai_mime.stats.readers.count_many` and wraps the result in the checksummed cache of
:mod:`~monai_mime.stats.cache`. Counting is :mod:`~monai_mime.stats.counting`; nnU-Net's dataset and fold rules
are :mod:`~monai_mime.stats.nnunet_folds`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from tqdm.auto import tqdm

from monai_mime.stats import cache as _cache
from monai_mime.stats.counting import count_labels
from monai_mime.stats.nnunet_folds import nnunet_label_info, nnunet_training_cases, read_dataset_json, require_nnunet
from monai_mime.stats.readers import (
    LABEL_ENDINGS,
    NIFTI_ENDINGS,
    SITK_ENDINGS,
    PathLike,
    count_many,
    list_label_files,
    read_with_monai,
    stack_counts,
    strip_ending,
)

__all__ = ["SourcesMixin"]

CacheArg = Union[bool, PathLike, None]  # noqa: UP007


class SourcesMixin:
    """The ``from_*`` constructors of :class:`~monai_mime.stats.ClassStatistics`.

    Every file-based constructor caches its result (``cache=True``: a file under
    :func:`~monai_mime.stats.cache.default_cache_dir`; a path: that file; ``False``: no cache), keyed by the
    fingerprint of the files and options, so a second call on unchanged data is instant.
    """

    @classmethod
    def _build(cls, counts: np.ndarray, **fields: Any) -> Any:  # pragma: no cover - implemented by ClassStatistics
        raise NotImplementedError

    @classmethod
    def _from_files(
        cls,
        items: Sequence[Any],
        names: Sequence[str],
        reader: str,
        *,
        fingerprint_files: Sequence[PathLike],
        source: str,
        root: PathLike,
        num_classes: int | None,
        ignore_index: int | None,
        cache: CacheArg,
        num_workers: int | None,
        progress: bool,
        negative_background: bool = False,
        class_names: Sequence[str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Any:
        """Count files (or cases) through :func:`count_many`, with the cache around it."""
        opts = {
            "source": source.split(":")[0],
            "reader": reader,
            "num_classes": num_classes,
            "ignore_index": ignore_index,
            "negative_background": negative_background,
            **(options or {}),
        }
        fp = _cache.fingerprint(fingerprint_files, opts)
        cache_path = (
            None
            if cache is None or cache is False
            else (_cache.cache_file(root, opts) if cache is True else Path(cache))
        )
        if cache_path is not None:
            cached = _cache.load_cached(cache_path, fp, cls.from_dict)  # type: ignore[attr-defined]
            if cached is not None:
                return cached
        results = count_many(
            items,
            reader,
            num_workers=num_workers,
            progress=progress,
            num_classes=num_classes,
            ignore_index=ignore_index,
            negative_background=negative_background,
        )
        counts, ignored = stack_counts(results, num_classes)
        stats = cls._build(
            counts=counts,
            ignored=ignored,
            case_ids=list(names),
            ignore_index=ignore_index,
            source=source,
            fingerprint=fp,
            class_names=list(class_names or ()),
        )
        if cache_path is not None:
            try:
                stats.save(cache_path)
            except OSError as e:
                warnings.warn(
                    f"could not write the statistics cache {cache_path}: {e}", _cache.CacheWarning, stacklevel=2
                )
        return stats

    @classmethod
    def from_labels(
        cls,
        labels: Iterable[Any],
        num_classes: int | None,
        ignore_index: int | None = None,
        case_ids: Sequence[str] | None = None,
        progress: bool = False,
    ) -> Any:
        """Statistics of label maps given as numpy arrays or torch tensors (any iterable, e.g. a generator).

        Each element is one image (any shape; a batch counts as one image). ``num_classes=None`` infers K as the
        largest label + 1. The fingerprint is a hash of the resulting counts (in-memory data are not cached).
        """
        given = None if case_ids is None else [str(c) for c in case_ids]
        ids: list[str] = []

        def results() -> Iterator[tuple[np.ndarray, int]]:
            for i, arr in enumerate(tqdm(labels, disable=not progress, desc="counting labels", leave=False)):
                if given is not None and i >= len(given):
                    raise ValueError(f"more label images than the {len(given)} case ids")
                ids.append(f"image_{i:05d}" if given is None else given[i])
                yield count_labels(arr, num_classes, ignore_index, name=ids[-1])

        counts, ignored = stack_counts(results(), num_classes)
        if given is not None and len(ids) != len(given):
            raise ValueError(f"{len(given)} case ids for {len(ids)} label images")
        digest = hashlib.sha256(json.dumps([ids, counts.tolist(), ignored.tolist()]).encode()).hexdigest()
        return cls._build(
            counts=counts,
            ignored=ignored,
            case_ids=ids,
            ignore_index=ignore_index,
            source="labels",
            fingerprint="sha256:" + digest,
        )

    @classmethod
    def from_folder(
        cls,
        path: PathLike,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        num_workers: int | None = None,
        cache: CacheArg = True,
        progress: bool = True,
    ) -> Any:
        """Statistics of the label images in a folder (``.nii``/``.nii.gz`` via nibabel, ``.npy``, SimpleITK formats).

        ``num_workers=None``: one process below 256 files, else up to 8 (``os.cpu_count()``). Case ids are the file
        names without their ending.
        """
        files = list_label_files(path)
        names = [strip_ending(f.name, LABEL_ENDINGS) for f in files]
        return cls._from_files(
            files,
            names,
            "file",
            fingerprint_files=files,
            source=f"folder:{Path(path)}",
            root=path,
            num_classes=num_classes,
            ignore_index=ignore_index,
            cache=cache,
            num_workers=num_workers,
            progress=progress,
        )

    @classmethod
    def from_data_dicts(
        cls,
        data: Any,
        label_key: str = "label",
        num_classes: int | None = None,
        ignore_index: int | None = None,
        num_workers: int | None = None,
        cache: CacheArg = True,
        progress: bool = True,
    ) -> Any:
        """Statistics of MONAI data dicts (``[{"image": ..., "label": path_or_array}, ...]``) or a MONAI ``Dataset``.

        A list of dicts whose labels are all file paths is read with ``monai.transforms.LoadImage`` (in worker
        processes, cached). A ``Dataset`` (anything with ``__getitem__`` and ``__len__`` that is not a list or
        tuple) is indexed, so its transforms apply: count what the network sees (deterministic transforms such as
        ``LoadImaged``/``Spacingd``; a patch sampler returning a list counts each patch as one image).
        """
        if isinstance(data, (list, tuple)):
            values = [d[label_key] for d in data]
            if values and all(isinstance(v, (str, os.PathLike)) for v in values):
                names = [strip_ending(Path(v).name, NIFTI_ENDINGS + SITK_ENDINGS) for v in values]
                return cls._from_files(
                    values,
                    names,
                    "monai",
                    fingerprint_files=values,
                    source="data_dicts",
                    root=Path(values[0]).parent,
                    num_classes=num_classes,
                    ignore_index=ignore_index,
                    cache=cache,
                    num_workers=num_workers,
                    progress=progress,
                    options={"label_key": label_key},
                )
            samples: Iterable[Any] = data
        else:
            samples = (data[i] for i in range(len(data)))

        def labels() -> Iterator[Any]:
            for sample in samples:
                for d in sample if isinstance(sample, list) else [sample]:
                    v = d[label_key]
                    yield read_with_monai(v) if isinstance(v, (str, os.PathLike)) else v

        stats = cls.from_labels(labels(), num_classes, ignore_index, progress=progress)
        stats.source = "data_dicts"
        return stats

    @classmethod
    def from_nnunet_raw(
        cls,
        dataset_folder: PathLike,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        cases: Sequence[str] | None = None,
        num_workers: int | None = None,
        cache: CacheArg = True,
        progress: bool = True,
    ) -> Any:
        """Statistics of an nnU-Net v2 raw dataset (``dataset.json`` + ``labelsTr``), all cases or ``cases``.

        K and the ignore label come from ``dataset.json`` (a label named ``"ignore"``, the highest value, as in
        nnU-Net); passing different values is an error. Does not need nnunetv2.
        """
        folder = Path(dataset_folder).resolve()
        dj = read_dataset_json(folder)
        k, ignore, names = nnunet_label_info(dj)
        for given, declared, what in ((num_classes, k, "num_classes"), (ignore_index, ignore, "ignore_index")):
            if given is not None and given != declared:
                raise ValueError(f"{folder}/dataset.json declares {what}={declared}, but {what}={given} was passed")
        ending = dj.get("file_ending", ".nii.gz")
        if "dataset" in dj:
            files = {c: folder / e["label"] for c, e in dj["dataset"].items()}
        else:
            files = {strip_ending(p.name, [ending]): p for p in sorted((folder / "labelsTr").glob(f"*{ending}"))}
        if not files:
            raise ValueError(f"{folder}/labelsTr: no label files ending in {ending}")
        if cases is not None:
            missing = sorted(set(cases) - set(files))
            if missing:
                raise ValueError(f"{folder}: cases not in the dataset: {', '.join(missing[:5])}")
            files = {c: files[c] for c in cases}
        paths = list(files.values())
        return cls._from_files(
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

    @classmethod
    def from_nnunet_preprocessed(
        cls,
        preprocessed_dataset_folder: PathLike,
        configuration: str | None = None,
        fold: int | str = 0,
        plans_identifier: str = "nnUNetPlans",
        num_workers: int | None = None,
        cache: CacheArg = True,
        progress: bool = True,
    ) -> Any:
        """Statistics of the training cases of one fold of an nnU-Net v2 preprocessed dataset.

        Counts the segmentations nnU-Net trains on (resampled and cropped), read with nnU-Net's own dataset class
        (``infer_dataset_class``); the cases are those ``nnUNetTrainer.do_split`` picks (see
        :func:`nnunet_training_cases`; ``fold="all"`` is every case). -1 (background outside the crop mask) counts
        as background 0, as in nnU-Net's training pipeline. ``configuration=None``: the first of "3d_fullres", "2d",
        "3d_lowres" that is planned and preprocessed.
        """
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
                if c in plans.available_configurations
                and (folder / plans.get_configuration(c).data_identifier).is_dir()
            ]
            configuration = done[0] if done else "3d_fullres"
        if configuration not in plans.available_configurations:
            raise ValueError(
                f"{plans_file}: no configuration {configuration!r} "
                f"(available: {', '.join(plans.available_configurations)})"
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
        return cls._from_files(
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
