"""What the ``ClassStatistics.from_*`` constructors of arrays, label folders and MONAI data dicts do.

Functions of the class to build (``cls``, :class:`~monai_mime.stats.ClassStatistics` or a subclass), whose
classmethods carry the documented signatures. Each file-based constructor names its items and a reader
(:mod:`~monai_mime.stats.readers`), counts them through :func:`~monai_mime.stats.readers.count_many` and wraps the
result in the checksummed cache of :mod:`~monai_mime.stats.cache`. Counting is :mod:`~monai_mime.stats.counting`;
the nnU-Net constructors are :mod:`~monai_mime.stats.nnunet_sources`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

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

if TYPE_CHECKING:
    from monai_mime.stats.counts import ClassStatistics

__all__ = ["CacheArg", "from_data_dicts", "from_files", "from_folder", "from_label_counts", "from_labels"]

CacheArg = Union[bool, PathLike, None]  # noqa: UP007


def from_label_counts(
    cls: type[ClassStatistics],
    counts: np.ndarray,
    ignored: np.ndarray,
    case_ids: list[str],
    ignore_index: int | None,
    source: str,
    fingerprint: str,
    class_names: list[str] | None = None,
) -> ClassStatistics:
    """From label counts: every non-ignored voxel has exactly one class, so ``|Ω_n| = Σ_k G_nk``."""
    return cls(
        counts=counts,
        voxels=np.asarray(counts).sum(axis=1),
        ignored=ignored,
        case_ids=case_ids,
        ignore_index=ignore_index,
        source=source,
        fingerprint=fingerprint,
        class_names=list(class_names or ()),
    )


def from_files(
    cls: type[ClassStatistics],
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
) -> ClassStatistics:
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
        None if cache is None or cache is False else (_cache.cache_file(root, opts) if cache is True else Path(cache))
    )
    if cache_path is not None:
        cached = _cache.load_cached(cache_path, fp, cls.from_dict)
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
    stats = from_label_counts(cls, counts, ignored, list(names), ignore_index, source, fp, list(class_names or ()))
    if cache_path is not None:
        try:
            stats.save(cache_path)
        except OSError as e:
            warnings.warn(f"could not write the statistics cache {cache_path}: {e}", _cache.CacheWarning, stacklevel=2)
    return stats


def from_labels(
    cls: type[ClassStatistics],
    labels: Iterable[Any],
    num_classes: int | None,
    ignore_index: int | None,
    case_ids: Sequence[str] | None,
    progress: bool,
) -> ClassStatistics:
    """``ClassStatistics.from_labels`` (see its docstring)."""
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
    return from_label_counts(cls, counts, ignored, ids, ignore_index, "labels", "sha256:" + digest)


def from_folder(
    cls: type[ClassStatistics],
    path: PathLike,
    num_classes: int | None,
    ignore_index: int | None,
    num_workers: int | None,
    cache: CacheArg,
    progress: bool,
) -> ClassStatistics:
    """``ClassStatistics.from_folder`` (see its docstring)."""
    files = list_label_files(path)
    names = [strip_ending(f.name, LABEL_ENDINGS) for f in files]
    return from_files(
        cls,
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


def from_data_dicts(
    cls: type[ClassStatistics],
    data: Any,
    label_key: str,
    num_classes: int | None,
    ignore_index: int | None,
    num_workers: int | None,
    cache: CacheArg,
    progress: bool,
) -> ClassStatistics:
    """``ClassStatistics.from_data_dicts`` (see its docstring)."""
    if isinstance(data, (list, tuple)):
        values = [d[label_key] for d in data]
        if values and all(isinstance(v, (str, os.PathLike)) for v in values):
            names = [strip_ending(Path(v).name, NIFTI_ENDINGS + SITK_ENDINGS) for v in values]
            return from_files(
                cls,
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

    stats = from_labels(cls, labels(), num_classes, ignore_index, None, progress)
    stats.source = "data_dicts"
    return stats
