"""Counting label voxels, and the places labels come from: arrays, folders, MONAI data dicts, nnU-Net datasets.

:func:`count_labels` is the per-image kernel. The readers turn one file into an array; :func:`count_many` streams
images through the kernel (one image in memory per process, several processes for many files, a tqdm bar), and
:class:`SourcesMixin` holds the ``ClassStatistics.from_*`` constructors built on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Union

import numpy as np
from tqdm.auto import tqdm

from monai_mime.stats import cache as _cache

__all__ = [
    "count_labels",
    "read_label_file",
    "list_label_files",
    "nnunet_label_info",
    "nnunet_training_cases",
    "count_many",
    "SourcesMixin",
]

PathLike = Union[str, os.PathLike]  # noqa: UP007 -- a runtime alias, `|` needs Python 3.10 objects
CacheArg = Union[bool, PathLike, None]  # noqa: UP007

#: File endings read by nibabel; others by SimpleITK.
NIFTI_ENDINGS = (".nii.gz", ".nii")
SITK_ENDINGS = (".mha", ".mhd", ".nrrd", ".nhdr", ".png", ".bmp", ".tif", ".tiff")
#: Up to this many classes, counting compares per class (one vectorised pass each, no int64 copy of the image);
#: beyond it, one ``np.bincount``.
_FAST_MAX_CLASSES = 16
#: Voxels per chunk of the comparison path (256 KiB of uint8).
_CHUNK = 1 << 18
#: Below this many files, count in this process (starting a process pool costs more than it saves).
_MIN_FILES_FOR_WORKERS = 256


# ---------------------------------------------------------------------------------------------------- the kernel
def _as_integer_array(labels: Any, name: str) -> np.ndarray:
    """A numpy view of ``labels`` (array, tensor, MetaTensor) with an integer dtype; float values must be integers."""
    if hasattr(labels, "detach"):  # torch.Tensor / MetaTensor, possibly on a GPU
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.dtype.kind == "b":
        return arr.view(np.uint8)
    if arr.dtype.kind in "iu":
        return arr
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            as_int = arr.astype(np.int64)
        bad = as_int != arr  # also catches NaN and inf
        if bad.any():
            examples = np.unique(arr[bad])[:5].tolist()
            raise ValueError(f"{name}: float label image with non-integer values, e.g. {examples}")
        return as_int
    raise ValueError(f"{name}: label image of dtype {arr.dtype} (expected integers)")


def _reject(arr: np.ndarray, num_classes: int, ignore_index: int | None, name: str, allowed_negative: int) -> None:
    """Raise the ValueError that names ``name`` and the label values outside ``[0, num_classes)``."""
    bad = (arr < allowed_negative) | (arr >= num_classes)
    if ignore_index is not None:
        bad &= arr != ignore_index
    values = np.unique(arr[bad])
    shown = ", ".join(map(str, values[:10].tolist())) + (", ..." if values.size > 10 else "")
    extra = "" if ignore_index is None else f" (ignore label {ignore_index})"
    raise ValueError(f"{name}: label values {shown} outside [0, {num_classes}){extra}")


def _count_by_comparison(arr: np.ndarray, k: int, ignore_index: int | None, hi: int) -> tuple[np.ndarray, int] | None:
    """Counts from one comparison per class (plus the ignore label); ``None`` when values outside the classes occur.

    Works through the voxels in chunks of :data:`_CHUNK`, so the boolean temporaries stay small (cache-resident,
    no allocator churn) whatever the image size. Precondition: no value below the lowest allowed one; class 0 takes
    every remaining voxel (nnU-Net's -1 included).
    """
    if hi >= k and hi != ignore_index:
        return None
    flat = arr.ravel(order="K")  # a view for C- or Fortran-contiguous arrays
    counts = [0] * k
    ignored = beyond = 0
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start : start + _CHUNK]
        for c in range(1, k):
            counts[c] += int(np.count_nonzero(chunk == c))
        if hi >= k:
            ignored += int(np.count_nonzero(chunk == ignore_index))
            beyond += int(np.count_nonzero(chunk >= k))
    if beyond != ignored:
        return None
    counts[0] = flat.size - ignored - sum(counts)
    return np.array(counts, dtype=np.int64), ignored


def count_labels(
    labels: Any,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    *,
    name: str = "labels",
    negative_background: bool = False,
) -> tuple[np.ndarray, int]:
    """Voxel counts per class of one label map, and its number of ignored voxels.

    ``G_k = Σ_i [t_i = k]`` (the ``G`` of every Dice-family loss, summed over one image). Any shape; integer,
    bool or integer-valued float dtype; numpy array or torch tensor. Order of the voxels does not matter, so
    Fortran-ordered NIfTI arrays are never copied.

    Args:
        labels: one label map.
        num_classes: K; every value must lie in ``[0, K)`` or equal ``ignore_index``. ``None``: K = largest
            non-ignored value + 1 (the returned vector is that long).
        ignore_index: label value counted in neither the foreground nor the background.
        name: how error messages name the image (a file name).
        negative_background: count -1 as background 0 (nnU-Net's preprocessed segmentations mark the background
            outside the nonzero crop mask with -1).

    Returns:
        ``(counts, ignored)``: int64 array of length K, and the number of voxels equal to ``ignore_index``.

    Raises:
        ValueError: values outside ``[0, K)``, negative values, non-integer floats; the message names the image.
    """
    arr = _as_integer_array(labels, name)
    k = num_classes
    if arr.size == 0:
        return np.zeros(k or 0, dtype=np.int64), 0
    lowest = -1 if negative_background else 0
    hi = int(arr.max())
    lo = 0 if arr.dtype.kind in "bu" else int(arr.min())
    fast = k is not None and k <= _FAST_MAX_CLASSES and lo >= lowest and (ignore_index is None or ignore_index >= k)
    if fast:
        result = _count_by_comparison(arr, k, ignore_index, hi)
        if result is not None:
            return result
    return _count_by_bincount(arr, k, ignore_index, name, lowest, lo, hi)


def _count_by_bincount(
    arr: np.ndarray, k: int | None, ignore_index: int | None, name: str, lowest: int, lo: int, hi: int
) -> tuple[np.ndarray, int]:
    """General path: one ``np.bincount`` over the values shifted to start at 0."""
    offset = min(lo, 0)
    if hi - offset > 1 << 24:  # do not allocate a histogram of billions of bins for a stray value
        _reject(arr, k if k is not None else 1 << 24, ignore_index, name, lowest)
    flat = arr.ravel(order="K")
    bins = np.bincount(flat - offset if offset else flat, minlength=1 - offset)  # bins[v - offset] = #value v
    ignored = 0
    if ignore_index is not None and 0 <= ignore_index - offset < bins.size:
        ignored = int(bins[ignore_index - offset])
        bins[ignore_index - offset] = 0
    if lowest == -1 and offset <= -1:
        bins[-offset] += bins[-1 - offset]  # -1 -> background 0
        bins[-1 - offset] = 0
    values = np.flatnonzero(bins) + offset
    if k is None:
        k = int(values.max()) + 1 if values.size else 1
    if values.size and (values.min() < 0 or values.max() >= k):
        _reject(arr, k, ignore_index, name, lowest)
    counts = np.zeros(k, dtype=np.int64)
    nonneg = bins[-offset:][:k]
    counts[: nonneg.size] = nonneg
    return counts, ignored


# ------------------------------------------------------------------------------------------------------- readers
def _strip_ending(name: str, endings: Sequence[str]) -> str:
    for e in endings:
        if name.lower().endswith(e):
            return name[: -len(e)]
    return Path(name).stem


def read_label_file(path: PathLike) -> np.ndarray:
    """The voxel array of a label image: NIfTI by nibabel (``np.asanyarray(img.dataobj)``, no scaling to float
    for integer files), ``.npy`` by numpy (memory-mapped), other formats by SimpleITK."""
    path = Path(path)
    lower = path.name.lower()
    if lower.endswith(NIFTI_ENDINGS):
        import nibabel as nib

        return np.asanyarray(nib.load(path).dataobj)
    if lower.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    if lower.endswith(SITK_ENDINGS):
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    raise ValueError(f"{path}: unsupported label file type (use .nii/.nii.gz, .npy or {', '.join(SITK_ENDINGS)})")


@lru_cache(maxsize=1)
def _monai_loader() -> Callable[[str], Any]:
    from monai.transforms import LoadImage

    return LoadImage(image_only=True)


def _read_with_monai(path: PathLike) -> Any:
    return _monai_loader()(str(path))


def _read_nnunet_case(item: tuple[str, str, str]) -> Any:
    """The segmentation of one preprocessed case ``(folder, identifier, file ending)``, read with nnU-Net's own
    dataset class (``file_ending_dataset_mapping[ending]``, the class ``infer_dataset_class`` picks)."""
    from nnunetv2.training.dataloading.nnunet_dataset import file_ending_dataset_mapping

    folder, identifier, ending = item
    _, seg, _, _ = file_ending_dataset_mapping[ending](folder, [identifier]).load_case(identifier)
    return seg[:]


_READERS: dict[str, Callable[[Any], Any]] = {
    "file": read_label_file,
    "monai": _read_with_monai,
    "nnunet": _read_nnunet_case,
}


def _count_item(item: Any, reader: str, **kwargs: Any) -> tuple[np.ndarray, int]:
    """Read one item with ``_READERS[reader]`` and count it; errors name the file (a read failure: ValueError)."""
    name = os.path.join(*item[:2]) + "_seg" if isinstance(item, tuple) else str(item)
    try:
        arr = _READERS[reader](item)
    except Exception as e:  # noqa: BLE001 - any reader failure is "this file cannot be read"
        raise ValueError(f"{name}: cannot read label image ({type(e).__name__}: {e})") from None
    return count_labels(arr, name=name, **kwargs)


def list_label_files(folder: PathLike) -> list[Path]:
    """The label images directly in ``folder`` (NIfTI, ``.npy`` or a SimpleITK format), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    endings = NIFTI_ENDINGS + (".npy",) + SITK_ENDINGS
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(endings))
    if not files:
        raise ValueError(f"{folder}: no label images (.nii, .nii.gz, .npy, {', '.join(SITK_ENDINGS)}) in this folder")
    return files


# ------------------------------------------------------------------------------------------------------- nnU-Net
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


def nnunet_training_cases(dataset_folder: PathLike, data_folder: PathLike, fold: int | str) -> list[str]:
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


def _nnunet_json(folder: Path) -> dict[str, Any]:
    path = folder / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no dataset.json (not an nnU-Net dataset folder)")
    return json.loads(path.read_text())


def _import_nnunet() -> None:
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        raise ImportError("nnU-Net preprocessed datasets need nnunetv2: pip install 'monai-mime[nnunet]'") from None


# -------------------------------------------------------------------------------------------------------- engine
def _auto_workers(num_workers: int | None, n: int) -> int:
    if num_workers is not None:
        return max(1, int(num_workers))
    return 1 if n < _MIN_FILES_FOR_WORKERS else max(1, min(os.cpu_count() or 1, 8))


def count_many(
    items: Sequence[Any],
    reader: str,
    *,
    num_workers: int | None = None,
    progress: bool = True,
    **count_kwargs: Any,
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``count_labels(read(item))`` for every item, in order; one image per process in memory at a time.

    With more than one worker the items go to a ``ProcessPoolExecutor`` in chunks; the first error cancels the
    rest and is raised here.
    """
    n = len(items)
    workers = min(_auto_workers(num_workers, n), n) if n else 1
    with tqdm(total=n, disable=not progress, desc="counting labels", unit="img", leave=False) as bar:
        if workers <= 1:
            for item in items:
                yield _count_item(item, reader, **count_kwargs)
                bar.update()
            return
        fn = partial(_count_item, reader=reader, **count_kwargs)
        ex = ProcessPoolExecutor(max_workers=workers)
        try:
            for result in ex.map(fn, items, chunksize=max(1, min(16, n // (workers * 8)))):
                yield result
                bar.update()
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def _stack(results: Iterable[tuple[np.ndarray, int]], num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) counts and (N,) ignored from per-image results; with K unknown, short vectors are zero-padded."""
    rows, ignored = [], []
    for counts, ign in results:
        rows.append(counts)
        ignored.append(ign)
    k = num_classes if num_classes is not None else max([r.size for r in rows] + [1])
    table = np.zeros((len(rows), k), dtype=np.int64)
    for i, r in enumerate(rows):
        table[i, : r.size] = r
    return table, np.asarray(ignored, dtype=np.int64).reshape(-1)


# -------------------------------------------------------------------------------------------------- constructors
class SourcesMixin:
    """The ``from_*`` constructors of :class:`~monai_mime.stats.ClassStatistics`.

    Every file-based constructor caches its result (``cache=True``: a file under
    :func:`~monai_mime.stats.cache.default_cache_dir`; a path: that file; ``False``: no cache), keyed by the
    fingerprint of the files and options, so a second call on unchanged data is instant.
    """

    @classmethod
    def _build(cls, **fields: Any) -> Any:  # pragma: no cover - implemented by ClassStatistics
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
        counts, ignored = _stack(results, num_classes)
        stats = cls._build(
            counts=counts,
            ignored=ignored,
            case_ids=list(names),
            ignore_index=ignore_index,
            source=source,
            fingerprint=fp,
            class_names=class_names,
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

        counts, ignored = _stack(results(), num_classes)
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
        names = [_strip_ending(f.name, NIFTI_ENDINGS + (".npy",) + SITK_ENDINGS) for f in files]
        return cls._from_files(
            files,
            names,
            "file",
            fingerprint_files=files,
            source=f"folder:{Path(path).resolve()}",
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
                names = [_strip_ending(Path(v).name, NIFTI_ENDINGS + SITK_ENDINGS) for v in values]
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
                    yield _read_with_monai(v) if isinstance(v, (str, os.PathLike)) else v

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
        dj = _nnunet_json(folder)
        k, ignore, names = nnunet_label_info(dj)
        for given, declared, what in ((num_classes, k, "num_classes"), (ignore_index, ignore, "ignore_index")):
            if given is not None and given != declared:
                raise ValueError(f"{folder}/dataset.json declares {what}={declared}, but {what}={given} was passed")
        ending = dj.get("file_ending", ".nii.gz")
        if "dataset" in dj:
            files = {c: folder / e["label"] for c, e in dj["dataset"].items()}
        else:
            files = {_strip_ending(p.name, [ending]): p for p in sorted((folder / "labelsTr").glob(f"*{ending}"))}
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
            source=f"nnunet_raw:{folder}",
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
        _import_nnunet()
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
        k, ignore, names = nnunet_label_info(_nnunet_json(folder))
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
            source=f"nnunet_preprocessed:{folder}",
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
