"""Counting the voxels of each class in one label map: the kernel every statistics source runs per image.

``G_k = Σ_i [t_i = k]`` (the ``G`` of every Dice-family loss, ``docs/equations.md``), the ignore label counted apart.
Up to :data:`_FAST_MAX_CLASSES` classes one comparison per class in cache-sized chunks (no int64 copy of the
image); beyond it, or when stray values occur, one ``np.bincount``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["count_labels"]

#: Up to this many classes, counting compares per class (one vectorised pass each, no int64 copy of the image);
#: beyond it, one ``np.bincount``.
_FAST_MAX_CLASSES = 16
#: Voxels per chunk of the comparison path (256 KiB of uint8).
_CHUNK = 1 << 18


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
    if k is not None and k <= _FAST_MAX_CLASSES and lo >= lowest and (ignore_index is None or ignore_index >= k):
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
