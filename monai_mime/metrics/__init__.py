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

from monai_mime.metrics.cases import CaseMetrics, MetricAccumulator, evaluate_case
from monai_mime.metrics.per_class import (
    dice_per_class,
    hd95_per_class,
    image_diagonal,
    volume_counts,
    volume_ratio_per_class,
)

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
