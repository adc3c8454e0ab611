"""Dice, HD95 and predicted / true volumes per class of one case, with the paper's conventions for empty masks.

The conventions (what a missed or a spurious class scores) are in the docstring of :mod:`monai_mime.metrics`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import torch

__all__ = [
    "ArrayLike",
    "Spacing",
    "check_pair",
    "count_ratio",
    "dice_per_class",
    "hd95_per_class",
    "image_diagonal",
    "volume_counts",
    "volume_ratio_per_class",
]

ArrayLike = np.ndarray | torch.Tensor
Spacing = float | Sequence[float] | np.ndarray | None


# ----------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------
def _label_map(x: ArrayLike, name: str) -> torch.Tensor:
    """Return ``x`` as a CPU int64 tensor of shape ``spatial`` (a leading singleton channel is dropped)."""
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise ValueError(f"{name} must be an integer label map, got non-integer float values")
    elif t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if t.ndim >= 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim < 1:
        raise ValueError(f"{name} must have at least one spatial dimension, got shape {tuple(x.shape)}")
    return t.to(torch.int64)


def check_pair(pred: ArrayLike, gt: ArrayLike, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    p, g = _label_map(pred, "pred"), _label_map(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same spatial shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    for t, name in ((p, "pred"), (g, "gt")):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(
                f"{name} has label values in [{int(t.min())}, {int(t.max())}], outside [0, {num_classes - 1}]"
                f" for num_classes={num_classes}"
            )
    return p, g


def _spacing(spacing: Spacing, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim, dtype=np.float64)
    s = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if s.size == 1:
        s = np.full(ndim, float(s[0]))
    if s.shape != (ndim,):
        raise ValueError(f"spacing must be a number or have one value per spatial axis ({ndim}), got {spacing!r}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing must be positive and finite, got {spacing!r}")
    return s


def _onehot(t: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(spatial) label map -> (1, K, *spatial) float one-hot, as MONAI's metric functions expect."""
    oh = torch.nn.functional.one_hot(t, num_classes)  # (*spatial, K)
    return oh.movedim(-1, 0).unsqueeze(0).to(torch.float32)


def _first(include_background: bool) -> int:
    return 0 if include_background else 1


def image_diagonal(shape: Sequence[int], spacing: Spacing = None) -> float:
    """Length of the image diagonal in physical units: ``sqrt(sum_d (shape_d * spacing_d)^2)``.

    This is the HD95 the paper's convention assigns to a class that is missed entirely (or predicted
    where there is nothing to predict).

    >>> image_diagonal((3, 4))
    5.0
    >>> image_diagonal((3, 4), spacing=(2.0, 1.0))
    7.211102550927978
    """
    s = _spacing(spacing, len(shape))
    return float(math.sqrt(float(np.sum((np.asarray(shape, dtype=np.float64) * s) ** 2))))


# ----------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------
def dice_per_class(
    pred: ArrayLike,
    gt: ArrayLike,
    num_classes: int,
    include_background: bool = False,
    both_empty: Literal["one", "exclude"] = "one",
) -> np.ndarray:
    """Per-class Dice ``2|P∩G| / (|P| + |G|)`` of two label maps, paper conventions for empty classes.

    Args:
        pred: predicted label map, shape ``spatial`` or ``(1, *spatial)``, integer values in ``[0, K)``.
        gt: ground-truth label map, same shape.
        num_classes: ``K``, including the background class 0.
        include_background: also return class 0 (first entry).
        both_empty: what a class absent from both ``gt`` and ``pred`` scores: ``"one"`` (the paper's
            convention, a perfect score) or ``"exclude"`` (the entry is masked: a
            :class:`numpy.ma.MaskedArray` is returned whose ``.mean()`` and ``.std()`` skip it, NaN-free).

    Returns:
        float64 array of length ``K - 1`` (``K`` with background). A class present in only one of the
        two maps scores 0.

    Computed by MONAI's ``compute_dice(..., ignore_empty=False)``, which already gives 1 when both masks
    are empty and 0 when exactly one is.
    """
    from monai.metrics import compute_dice

    if both_empty not in ("one", "exclude"):
        raise ValueError(f"both_empty must be 'one' or 'exclude', got {both_empty!r}")
    p, g = check_pair(pred, gt, num_classes)
    d = compute_dice(_onehot(p, num_classes), _onehot(g, num_classes), include_background=True, ignore_empty=False)
    out = d[0].double().numpy()[_first(include_background) :]
    if both_empty == "exclude":
        pc, gc = volume_counts(p, g, num_classes, include_background=include_background)
        return np.ma.masked_array(out, mask=(pc == 0) & (gc == 0))
    return out


def hd95_per_class(
    pred: ArrayLike,
    gt: ArrayLike,
    num_classes: int,
    spacing: Spacing = None,
    include_background: bool = False,
    percentile: float = 95.0,
) -> np.ndarray:
    """Per-class symmetric 95th-percentile Hausdorff distance, paper conventions for empty classes.

    Args:
        pred: predicted label map, shape ``spatial`` or ``(1, *spatial)``.
        gt: ground-truth label map, same shape.
        num_classes: ``K``, including the background class 0.
        spacing: voxel size, a number or one value per spatial axis (``None``: 1). Distances, including
            the diagonal used for missed classes, are in these units.
        include_background: also return class 0 (first entry).
        percentile: the Hausdorff percentile (95 for HD95, 100 for the maximum distance).

    Returns:
        float64 array of length ``K - 1`` (``K`` with background): MONAI's
        ``compute_hausdorff_distance(percentile=95, spacing=...)`` where both masks are non-empty,
        :func:`image_diagonal` where exactly one is empty, and 0 where both are.
    """
    from monai.metrics import compute_hausdorff_distance

    try:
        import scipy.ndimage  # noqa: F401 - MONAI's surface distances need it on the CPU
    except ImportError:
        raise ImportError("hd95_per_class needs scipy: pip install scipy (or monai-mime[examples])") from None
    p, g = check_pair(pred, gt, num_classes)
    sp = _spacing(spacing, p.ndim)
    classes = list(range(_first(include_background), num_classes))
    pc, gc = volume_counts(p, g, num_classes, include_background=True)
    out = np.zeros(len(classes), dtype=np.float64)
    diag = image_diagonal(tuple(p.shape), sp)
    both = [c for c in classes if pc[c] > 0 and gc[c] > 0]
    for j, c in enumerate(classes):
        if (pc[c] > 0) != (gc[c] > 0):
            out[j] = diag
    if both:
        idx = torch.tensor(both)
        yp = _onehot(p, num_classes)[:, idx]
        yt = _onehot(g, num_classes)[:, idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd = compute_hausdorff_distance(
                yp, yt, include_background=True, percentile=percentile, spacing=sp.tolist()
            )[0]
        for k, c in enumerate(both):
            out[classes.index(c)] = float(hd[k])
    return out


def volume_counts(
    pred: ArrayLike, gt: ArrayLike, num_classes: int, include_background: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel counts per class of ``pred`` and ``gt`` (int64 arrays of length ``K - 1``, or ``K``)."""
    p, g = check_pair(pred, gt, num_classes)
    pc = torch.bincount(p.reshape(-1), minlength=num_classes).numpy().astype(np.int64)
    gc = torch.bincount(g.reshape(-1), minlength=num_classes).numpy().astype(np.int64)
    f = _first(include_background)
    return pc[f:], gc[f:]


def volume_ratio_per_class(
    pred: ArrayLike | Iterable[ArrayLike],
    gt: ArrayLike | Iterable[ArrayLike],
    num_classes: int,
    include_background: bool = False,
) -> np.ndarray:
    """Predicted ÷ true voxel count per class, ``Σ_n |P_n^k| / Σ_n |G_n^k|``.

    ``pred`` and ``gt`` are one label map each, or two equally long iterables of label maps (a held-out
    set): the counts are summed over the set before dividing, so images without the class still count
    their false positives. 1 is the right amount of class ``k``; above 1 over-segmentation, below 1
    under-segmentation, 0 a class never predicted. A class absent from every ground truth gives
    ``inf`` if it was predicted somewhere and ``1.0`` if not (nothing to predict, nothing predicted).
    """
    if isinstance(pred, (np.ndarray, torch.Tensor)) and isinstance(gt, (np.ndarray, torch.Tensor)):
        pairs: Iterable[tuple[ArrayLike, ArrayLike]] = [(pred, gt)]
    else:
        pairs = zip(pred, gt, strict=True)
    n = num_classes - _first(include_background)
    ps, gs = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for p, g in pairs:
        pc, gc = volume_counts(p, g, num_classes, include_background=include_background)
        ps += pc
        gs += gc
    return count_ratio(ps, gs)


def count_ratio(ps: np.ndarray, gs: np.ndarray) -> np.ndarray:
    """``ps / gs`` per class: 1 where both are 0, inf where only ``gs`` is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = ps.astype(np.float64) / gs.astype(np.float64)
    r[(gs == 0) & (ps == 0)] = 1.0
    return r
