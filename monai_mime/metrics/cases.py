"""The metrics of one case (:class:`CaseMetrics`, :func:`evaluate_case`) and their summary over a held-out set
(:class:`MetricAccumulator`), with the conventions of :mod:`monai_mime.metrics`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from monai_mime.metrics.per_class import (
    ArrayLike,
    Spacing,
    check_pair,
    count_ratio,
    dice_per_class,
    hd95_per_class,
    volume_counts,
)

__all__ = ["CaseMetrics", "MetricAccumulator", "evaluate_case"]


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
    p, g = check_pair(pred, gt, num_classes)
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
        ratio = count_ratio(ps, gs)
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
