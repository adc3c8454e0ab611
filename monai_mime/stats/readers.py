"""Reading label images and streaming them through :func:`~monai_mime.stats.counting.count_labels`.

One reader per kind of source (a file by its ending, a path through MONAI's ``LoadImage``, a preprocessed nnU-Net
case through nnU-Net's own dataset class); :func:`count_many` reads and counts many items, one image per process in
memory at a time, in worker processes for many files, with a tqdm bar.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Union

import numpy as np
from tqdm.auto import tqdm

from monai_mime.stats.counting import count_labels

__all__ = ["LABEL_ENDINGS", "count_many", "list_label_files", "read_label_file", "read_with_monai", "stack_counts"]

PathLike = Union[str, os.PathLike]  # noqa: UP007 -- a runtime alias
#: File endings read by nibabel; others by SimpleITK.
NIFTI_ENDINGS = (".nii.gz", ".nii")
SITK_ENDINGS = (".mha", ".mhd", ".nrrd", ".nhdr", ".png", ".bmp", ".tif", ".tiff")
#: Every ending :func:`read_label_file` reads.
LABEL_ENDINGS = NIFTI_ENDINGS + (".npy",) + SITK_ENDINGS
#: Below this many files, count in this process (starting a process pool costs more than it saves).
_MIN_FILES_FOR_WORKERS = 256


def strip_ending(name: str, endings: Sequence[str]) -> str:
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

        return np.asanyarray(nib.load(path).dataobj)  # type: ignore[attr-defined]  # every image nibabel loads has it
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


def read_with_monai(path: PathLike) -> Any:
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
    "monai": read_with_monai,
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
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(LABEL_ENDINGS))
    if not files:
        raise ValueError(f"{folder}: no label images (.nii, .nii.gz, .npy, {', '.join(SITK_ENDINGS)}) in this folder")
    return files


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


def stack_counts(results: Iterable[tuple[np.ndarray, int]], num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
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
