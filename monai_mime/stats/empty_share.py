"""How often is a class absent from a training patch? The empty share of each class at a patch size.

Sub-patching hurts the Dice variants in proportion to how often a (patch, class) pair is empty: there ``G = 0`` and
every Dice variant divides by (almost) zero. For a patch size ``p`` and an image of shape ``S`` the patch positions
are all lower corners ``x`` with ``0 ≤ x_d ≤ S_d − p_d``; an axis shorter than the patch is padded to the patch size
(as MONAI's ``SpatialPad`` and nnU-Net's loader do) and has one position, the padding belonging to no class. Under
uniform placement (MONAI's ``RandSpatialCrop``, nnU-Net's random patches) the empty share of class k in image n is

    ``e_nk = #{x : Σ_{i ∈ patch(x)} [t_i = k] = 0} / #{x}``,

counted exactly: the voxel count of class k in every window is four (2D) or eight (3D) look-ups in the summed-area
table (integral image) of the class mask (:func:`window_counts`), one class at a time, so memory stays at one
integer table the size of the image (plus the coordinates of the foreground voxels, for the forced patches). The
dataset share is ``mean_n e_nk`` (an image drawn uniformly, then a position). Voxels of the ignore label, and any
value outside ``[0, K)``, belong to no class.

nnU-Net's foreground oversampling forces a share of the patches (``oversample_foreground_percent = 0.33``) to
contain foreground: it draws a foreground class present in the image uniformly, a voxel ``v`` of it uniformly, and
places the patch at ``max(0, v − p // 2)`` (possibly reaching past the far border, where it is padded). The empty
share of such a forced patch, ``f_nk``, is counted the same way (the window clipped to the image) at every voxel
of every foreground class; an image without foreground gets ``f_nk = e_nk``. Under oversampling the share is
``(1 − q) e_nk + q f_nk`` with ``q`` the forced fraction.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from monai_mime.stats import cache as _cache
from monai_mime.stats.readers import PathLike, read_label_file

if TYPE_CHECKING:
    from monai_mime.stats.counts import ClassStatistics
    from monai_mime.stats.sources import CacheArg

__all__ = [
    "EmptyShare",
    "NNUNET_FORCED_FRACTION",
    "attach_empty_share",
    "compute_empty_share",
    "image_empty_share",
    "window_counts",
]

#: nnU-Net's ``oversample_foreground_percent``: the share of patches forced to contain foreground.
NNUNET_FORCED_FRACTION = 0.33


@dataclass
class EmptyShare:
    """Per-image empty-patch counts of each class at one patch size (see the module docstring).

    Attributes:
        patch_size: the patch size, one entry per image axis.
        positions: (N,) int64, patch positions per image.
        absent: (N, K) int64, positions at which class k is absent from the patch.
        forced_absent: (N, K) float64, ``f_nk``: the share of nnU-Net's foreground-forced patches without class k.
    """

    patch_size: tuple[int, ...]
    positions: np.ndarray
    absent: np.ndarray
    forced_absent: np.ndarray

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.positions = np.asarray(self.positions, dtype=np.int64).reshape(-1)
        self.absent = np.asarray(self.absent, dtype=np.int64)
        self.forced_absent = np.asarray(self.forced_absent, dtype=np.float64)
        n = self.positions.shape[0]
        if self.absent.ndim != 2 or self.absent.shape[0] != n or self.forced_absent.shape != self.absent.shape:
            raise ValueError("absent and forced_absent must be (N, K) for the N images of positions")
        if (self.positions < 1).any() or (self.absent < 0).any() or (self.absent > self.positions[:, None]).any():
            raise ValueError("positions must be >= 1 and absent counts in [0, positions]")

    @property
    def uniform(self) -> np.ndarray:
        """(K,) ``mean_n e_nk``: the share of patches without class k under uniform placement."""
        return (self.absent / self.positions[:, None]).mean(axis=0)

    def oversampled(self, forced_fraction: float = NNUNET_FORCED_FRACTION) -> np.ndarray:
        """(K,) the share with a fraction ``forced_fraction`` of the patches forced onto foreground (nnU-Net)."""
        if not 0.0 <= forced_fraction <= 1.0:
            raise ValueError(f"forced_fraction must lie in [0, 1], got {forced_fraction}")
        return (1 - forced_fraction) * self.uniform + forced_fraction * self.forced_absent.mean(axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "patch_size": list(self.patch_size),
            "uniform": [round(float(v), 6) for v in self.uniform],
            "oversampled": [round(float(v), 6) for v in self.oversampled()],
            "forced_fraction": NNUNET_FORCED_FRACTION,
            "positions": self.positions.tolist(),
            "absent": self.absent.tolist(),
            "forced_absent": self.forced_absent.tolist(),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> EmptyShare:
        """Inverse of :meth:`to_dict` (the summaries are recomputed, not read)."""
        return cls(doc["patch_size"], doc["positions"], doc["absent"], doc["forced_absent"])


def _summed_area_table(mask: np.ndarray) -> np.ndarray:
    """``T[x] = Σ_{i < x} mask[i]`` (every axis), with a leading zero plane per axis: shape ``S + 1``."""
    dtype = np.int32 if mask.size < np.iinfo(np.int32).max else np.int64
    table = np.zeros(tuple(s + 1 for s in mask.shape), dtype=dtype)
    inner = table[tuple(slice(1, None) for _ in mask.shape)]
    np.cumsum(mask, axis=0, dtype=dtype, out=inner)
    for axis in range(1, mask.ndim):
        np.cumsum(inner, axis=axis, out=inner)
    return table


def window_counts(table: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """The sum of the mask over every window of size ``window`` that fits in it, from its summed-area table.

    Inclusion–exclusion over the ``2^d`` corners: ``Σ_c (−1)^{d − |c|} T[x + c ⊙ w]``. Shape ``S − w + 1``.
    """
    shape = tuple(s - 1 for s in table.shape)
    counts = np.zeros(tuple(s - w + 1 for s, w in zip(shape, window)), dtype=table.dtype)
    for corner in itertools.product((0, 1), repeat=len(shape)):
        part = table[tuple(slice(c * w, c * w + n) for c, w, n in zip(corner, window, counts.shape))]
        if (len(shape) - sum(corner)) % 2:
            counts -= part
        else:
            counts += part
    return counts


def _clipped_window_counts(table: np.ndarray, lower: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """The mask's sum over the windows ``[lower, lower + window)`` clipped to the image; ``lower`` is ``(M, d)``."""
    shape = np.array(table.shape) - 1
    lo = np.clip(lower, 0, shape)
    hi = np.clip(lower + np.asarray(window), 0, shape)
    total = np.zeros(lower.shape[0], dtype=np.int64)
    for corner in itertools.product((0, 1), repeat=len(shape)):
        index = tuple(np.where(c, hi[:, d], lo[:, d]) for d, c in enumerate(corner))
        sign = -1 if (len(shape) - sum(corner)) % 2 else 1
        total += sign * table[index].astype(np.int64)
    return total


def _as_label_array(labels: Any, ndim: int) -> np.ndarray:
    """``labels`` as a numpy array with ``ndim`` axes (leading singleton axes, e.g. a channel, dropped)."""
    arr = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    while arr.ndim > ndim and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != ndim:
        raise ValueError(
            f"a patch size of {ndim} axes for a label image of shape {tuple(arr.shape)}: give one size per axis "
            "(for 2D patches over the slices of a volume, 1 on the through-plane axis, e.g. 128 128 1)"
        )
    return arr


def image_empty_share(
    labels: Any, num_classes: int, patch_size: Sequence[int], ignore_index: int | None = None
) -> tuple[int, np.ndarray, np.ndarray]:
    """One image's positions, ``(K,)`` absent counts under uniform placement and ``(K,)`` forced empty shares.

    ``labels``: a label map with one axis per entry of ``patch_size`` (leading singleton axes allowed). Class 0 is
    the background; the forced patches are drawn over classes ``1..K−1`` (see the module docstring).
    """
    patch = tuple(int(p) for p in patch_size)
    if any(p < 1 for p in patch):
        raise ValueError(f"patch_size must be positive, got {patch}")
    arr = _as_label_array(labels, len(patch))
    window = tuple(min(p, s) for p, s in zip(patch, arr.shape))  # an axis shorter than the patch: padded
    positions = int(np.prod([s - w + 1 for s, w in zip(arr.shape, window)]))
    half = np.array(patch) // 2
    # nnU-Net's forced patches: a class drawn uniformly, then a voxel v of it, the patch at max(0, v − p // 2)
    forced_corners = [
        np.maximum(voxels - half, 0)
        for c in range(1, num_classes)
        if c != ignore_index and len(voxels := np.argwhere(arr == c))
    ]
    absent = np.zeros(num_classes, dtype=np.int64)
    forced = np.zeros(num_classes)
    for k in range(num_classes):
        table = _summed_area_table(arr == k)
        absent[k] = int((window_counts(table, window) == 0).sum())
        for lower in forced_corners:
            forced[k] += float((_clipped_window_counts(table, lower, patch) == 0).mean())
    if not forced_corners:
        return positions, absent, absent / positions
    return positions, absent, forced / len(forced_corners)


def compute_empty_share(
    labels: Iterable[Any],
    num_classes: int,
    patch_size: Sequence[int],
    ignore_index: int | None = None,
) -> EmptyShare:
    """The :class:`EmptyShare` of label maps (numpy arrays or tensors, any iterable), one image at a time."""
    rows = [image_empty_share(arr, num_classes, patch_size, ignore_index) for arr in labels]
    if not rows:
        raise ValueError("no label images: no empty share")
    positions, absent, forced = zip(*rows)
    return EmptyShare(tuple(patch_size), np.array(positions), np.stack(absent), np.stack(forced))


def attach_empty_share(
    stats: ClassStatistics,
    files: Sequence[PathLike],
    patch_size: Sequence[int],
    cache: CacheArg = True,
    progress: bool = True,
) -> EmptyShare:
    """Compute the empty share of the label files ``stats`` was counted from and set ``stats.empty_share``.

    ``files``: one label file per image of ``stats``, in its order. Cached like the counts (``cache=True``: under
    :func:`~monai_mime.stats.cache.default_cache_dir`; a path: that file; ``False``: not cached), keyed by the
    statistics' fingerprint (the files, their sizes and times, the counting options) and the patch size.
    """
    if len(files) != stats.num_images:
        raise ValueError(f"{len(files)} label files for statistics of {stats.num_images} images")
    options = {"empty_share": stats.fingerprint, "patch_size": [int(p) for p in patch_size]}
    fp = _cache.fingerprint(files, options)
    path = None if not cache else (_cache.cache_file(Path(files[0]).parent, options) if cache is True else Path(cache))
    share = None if path is None else _cache.load_cached(path, fp, _parse_cached)
    if share is None:
        images = (read_label_file(f) for f in tqdm(files, disable=not progress, desc="empty share", leave=False))
        share = compute_empty_share(images, stats.num_classes, patch_size, stats.ignore_index)
        if path is not None:
            doc = {"format": _cache.FORMAT, "version": _cache.VERSION, "kind": "empty_share", "fingerprint": fp}
            try:
                _cache.write_json_atomic(path, {**doc, **share.to_dict()})
            except OSError as e:
                warnings.warn(f"could not write the empty-share cache {path}: {e}", _cache.CacheWarning, stacklevel=2)
    stats.empty_share = share
    return share


def _parse_cached(doc: dict[str, Any]) -> EmptyShare:
    if doc.get("kind") != "empty_share":
        raise _cache.CorruptStatisticsError("not an empty-share cache file")
    try:
        return EmptyShare.from_dict(doc)
    except (KeyError, TypeError, ValueError) as e:
        raise _cache.CorruptStatisticsError(f"malformed empty-share document: {type(e).__name__}: {e}") from None
