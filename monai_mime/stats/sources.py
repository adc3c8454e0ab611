"""The ``ClassStatistics.from_*`` constructors of arrays, label folders and MONAI data dicts.

Each file-based constructor names its items and a reader (:mod:`~monai_mime.stats.readers`), counts them through
:func:`~monai_mime.stats.readers.count_many` and wraps the result in the checksummed cache of
:mod:`~monai_mime.stats.cache`. Counting is :mod:`~monai_mime.stats.counting`; the nnU-Net constructors are
:mod:`~monai_mime.stats.nnunet_sources`.
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

__all__ = ["CacheArg", "SourcesMixin"]

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
