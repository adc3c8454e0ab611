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
    #: training items {"image": (C, *spatial), "label": (1, *spatial)}: 2D images or slices, or 3D volumes
    train_items: list[dict[str, np.ndarray]]
    val_cases: list[Case]  #: whole held-out images / volumes
    slice_axis: int | None  #: spatial axis the 2D slices are taken across (None: items are whole images/volumes)
    num_train_cases: int
    spacing_unit: str  #: "mm" for nnU-Net data, "px" for the synthetic images
    source: str
    #: spatial axis across which a figure shows one slice of a volume (the slice axis for 2D slices); None: 2D
    view_axis: int | None = None
    _stats: Any = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def statistics(self) -> Any:
        """:class:`monai_mime.ClassStatistics` of the training items' labels (computed once)."""
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
        """(val case index, slice index across :attr:`view_axis`) of a held-out slice showing as many classes as
        possible; the slice index is None for 2D images."""
        best: tuple[int, int | None] = (0, None)
        best_score = -1.0
        axis = self.view_axis
        for ci, case in enumerate(self.val_cases):
            lab = case.label
            if axis is None:
                slabs: list[tuple[int | None, np.ndarray]] = [(None, lab)]
            else:
                slabs = [(s, np.take(lab, s, axis=axis)) for s in range(lab.shape[axis])]
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
