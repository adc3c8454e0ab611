"""The loaded data of an experiment: held-out :class:`Case` objects and the :class:`PreparedData` container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ExperimentError

__all__ = ["Case", "PreparedData", "normalise"]


@dataclass
class Case:
    """One image: ``image`` ``(C, *spatial)`` float32 (normalised), ``label`` ``(*spatial)`` uint8."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, ...]


@dataclass
class PreparedData:
    """Loaded data of one experiment, reusable across runs (:func:`run_experiment` ``data=``)."""

    name: str
    class_names: list[str]
    in_channels: int
    train_items: list[dict[str, np.ndarray]]  #: 2D training items {"image": (C,H,W), "label": (1,H,W)}
    val_cases: list[Case]  #: whole held-out images / volumes
    slice_axis: int | None  #: spatial axis the 2D slices are taken across (None: 2D data)
    num_train_cases: int
    spacing_unit: str  #: "mm" for nnU-Net data, "px" for the synthetic images
    source: str
    _stats: Any = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def statistics(self) -> Any:
        """:class:`monai_mime.ClassStatistics` of the 2D training items' labels (computed once)."""
        if self._stats is None:
            from monai_mime import ClassStatistics

            try:
                self._stats = ClassStatistics.from_labels(
                    (it["label"][0] for it in self.train_items), num_classes=self.num_classes
                )
            except ValueError as e:
                raise ExperimentError(f"class statistics of the training labels: {e}") from None
        return self._stats

    def example(self) -> tuple[int, int | None]:
        """(val case index, slice index) of a held-out slice showing as many classes as possible."""
        best: tuple[int, int | None] = (0, None)
        best_score = -1.0
        for ci, case in enumerate(self.val_cases):
            lab = case.label
            if self.slice_axis is None:
                slabs: list[tuple[int | None, np.ndarray]] = [(None, lab)]
            else:
                slabs = [(s, np.take(lab, s, axis=self.slice_axis)) for s in range(lab.shape[self.slice_axis])]
            for si, sl in slabs:
                counts = np.bincount(sl.reshape(-1), minlength=self.num_classes)[1:]
                # most classes present first, then the largest foreground
                score = float((counts > 0).sum()) + 1e-9 * float(counts.sum())
                if score > best_score:
                    best, best_score = (ci, si), score
        return best


def normalise(image: np.ndarray) -> np.ndarray:
    """Z-score each channel (MONAI ``NormalizeIntensity(channel_wise=True)``, nnU-Net's default)."""
    from monai.transforms import NormalizeIntensity

    out = NormalizeIntensity(channel_wise=True)(image)
    return np.asarray(out, dtype=np.float32)
