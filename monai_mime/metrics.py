"""Per-class Dice and HD95 with the conventions of Kervadec & de Bruijne (MIDL 2023).

MONAI's :func:`monai.metrics.compute_dice` and :func:`monai.metrics.compute_hausdorff_distance` do the
work on the ordinary case (both masks non-empty); this module only fixes the empty cases, which MONAI
reports as NaN (or not at all), so that a segmentation that *misses* a class is penalised instead of
silently dropped from the average:

=========================================  ==========================  =========================
case (per image and class)                 Dice                        HD95
=========================================  ==========================  =========================
something to predict, something predicted  MONAI ``compute_dice``      MONAI 95th-percentile HD
something to predict, nothing predicted    0                           image diagonal (physical)
nothing to predict, something predicted    0                           image diagonal (physical)
nothing to predict, nothing predicted      1 (or excluded)             0
=========================================  ==========================  =========================

The *image diagonal* is ``sqrt(sum_d (n_d * spacing_d)^2)`` for an image of ``n_d`` voxels along axis
``d``: the largest distance two points of the image's extent can have, in the units of ``spacing``
(millimetres for medical images), i.e. the worst HD95 a prediction could get.

Dice on a pair of binary masks is ``2|P ∩ G| / (|P| + |G|)`` (Eq. 1 of the paper with hard masks).
HD95 is the symmetric 95th-percentile Hausdorff distance between the mask surfaces (MONAI's
``percentile=95``, Euclidean, spacing-aware).

Inputs are integer label maps (numpy arrays or torch tensors) of shape ``spatial`` or
``(1, *spatial)``; ``num_classes`` counts the background (class 0). All functions return numpy arrays
of length ``num_classes - 1`` (foreground classes ``1..K-1``; entry ``j`` is class ``j + 1``) or
``num_classes`` when ``include_background=True``.

Example:
    >>> import numpy as np
    >>> gt = np.zeros((8, 8), dtype=np.uint8); gt[2:5, 2:5] = 1
    >>> pred = gt.copy()
    >>> dice_per_class(pred, gt, num_classes=3)  # class 2 is absent from both
    array([1., 1.])
    >>> hd95_per_class(np.zeros_like(gt), gt, num_classes=3, spacing=(1.0, 2.0))  # class 1 missed
    array([17.88854382,  0.        ])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

__all__ = [
    "CaseMetrics",
    "MetricAccumulator",
    "dice_per_class",
    "evaluate_case",
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


def _check_pair(pred: ArrayLike, gt: ArrayLike, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
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
    p, g = _check_pair(pred, gt, num_classes)
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
    p, g = _check_pair(pred, gt, num_classes)
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
    p, g = _check_pair(pred, gt, num_classes)
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
    return _ratio(ps, gs)


def _ratio(ps: np.ndarray, gs: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = ps.astype(np.float64) / gs.astype(np.float64)
    r[(gs == 0) & (ps == 0)] = 1.0
    return r


# ----------------------------------------------------------------------------------------------------
# one case, many cases
# ----------------------------------------------------------------------------------------------------
@dataclass
class CaseMetrics:
    """All metrics of one case (arrays over the reported classes, see :func:`evaluate_case`)."""

    dice: np.ndarray
    hd95: np.ndarray
    pred_counts: np.ndarray
    gt_counts: np.ndarray
    case_id: str | None = None

    @property
    def both_empty(self) -> np.ndarray:
        """True for classes absent from both the prediction and the ground truth."""
        return (self.pred_counts == 0) & (self.gt_counts == 0)

    def to_dict(self) -> dict:
        return {
            "case_id": self.case_id,
            "dice": self.dice.tolist(),
            "hd95": self.hd95.tolist(),
            "pred_counts": self.pred_counts.tolist(),
            "gt_counts": self.gt_counts.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> CaseMetrics:
        return cls(
            dice=np.asarray(d["dice"], dtype=np.float64),
            hd95=np.asarray(d["hd95"], dtype=np.float64),
            pred_counts=np.asarray(d["pred_counts"], dtype=np.int64),
            gt_counts=np.asarray(d["gt_counts"], dtype=np.int64),
            case_id=d.get("case_id"),
        )


def evaluate_case(
    pred: ArrayLike,
    gt: ArrayLike,
    num_classes: int,
    spacing: Spacing = None,
    include_background: bool = False,
    case_id: str | None = None,
) -> CaseMetrics:
    """Dice, HD95 and voxel counts per class of one case (paper conventions, see the module docstring)."""
    p, g = _check_pair(pred, gt, num_classes)
    pc, gc = volume_counts(p, g, num_classes, include_background=include_background)
    return CaseMetrics(
        dice=np.asarray(dice_per_class(p, g, num_classes, include_background=include_background)),
        hd95=hd95_per_class(p, g, num_classes, spacing=spacing, include_background=include_background),
        pred_counts=pc,
        gt_counts=gc,
        case_id=case_id,
    )


@dataclass
class MetricAccumulator:
    """Collects :class:`CaseMetrics` over a held-out set and summarises them per class.

    ``exclude_both_empty=True`` leaves a case out of a class's Dice / HD95 mean and std when that class is
    absent from both its prediction and its ground truth (instead of counting Dice 1 and HD95 0).

    Examples:
        >>> acc = MetricAccumulator(class_names=["a", "b"])
        >>> gt = np.array([[0, 1], [1, 0]])
        >>> acc.add(evaluate_case(gt, gt, num_classes=3))
        >>> acc.summary()["per_class"]["a"]["dice_mean"]
        1.0
    """

    class_names: list[str]
    exclude_both_empty: bool = False
    cases: list[CaseMetrics] = field(default_factory=list)

    def add(self, case: CaseMetrics) -> None:
        if len(case.dice) != len(self.class_names):
            raise ValueError(f"case has {len(case.dice)} classes, expected {len(self.class_names)}")
        self.cases.append(case)

    def extend(self, cases: Iterable[CaseMetrics]) -> None:
        for c in cases:
            self.add(c)

    def _stack(self, attr: str) -> np.ma.MaskedArray:
        values = np.stack([getattr(c, attr) for c in self.cases]).astype(np.float64)
        mask = np.zeros_like(values, dtype=bool)
        if self.exclude_both_empty:
            mask = np.stack([c.both_empty for c in self.cases])
        return np.ma.masked_array(values, mask=mask)

    def summary(self) -> dict:
        """Per class: Dice and HD95 mean / std over cases (population std), the number of cases that
        entered them, the number of cases containing the class, and the set-level volume ratio
        (:func:`volume_ratio_per_class`); plus ``mean`` over classes of the per-class means."""
        if not self.cases:
            raise ValueError("no case was added")
        dice, hd = self._stack("dice"), self._stack("hd95")
        ps = np.sum([c.pred_counts for c in self.cases], axis=0)
        gs = np.sum([c.gt_counts for c in self.cases], axis=0)
        ratio = _ratio(ps, gs)
        per_class = {}
        for k, name in enumerate(self.class_names):
            n = int(dice[:, k].count())
            per_class[name] = {
                "dice_mean": _f(dice[:, k].mean()) if n else None,
                "dice_std": _f(dice[:, k].std()) if n else None,
                "hd95_mean": _f(hd[:, k].mean()) if n else None,
                "hd95_std": _f(hd[:, k].std()) if n else None,
                "volume_ratio": float(ratio[k]),
                "num_cases": n,
                "num_cases_present": int(np.sum([c.gt_counts[k] > 0 for c in self.cases])),
            }
        dm = [v["dice_mean"] for v in per_class.values() if v["dice_mean"] is not None]
        hm = [v["hd95_mean"] for v in per_class.values() if v["hd95_mean"] is not None]
        return {
            "per_class": per_class,
            "mean": {
                "dice": float(np.mean(dm)) if dm else None,
                "hd95": float(np.mean(hm)) if hm else None,
            },
            "num_cases": len(self.cases),
        }


def _f(x: object) -> float:
    return float(x)  # type: ignore[arg-type]
