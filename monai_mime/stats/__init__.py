"""Dataset-level class statistics for Mime's a/b weights (Eq. 3), with sources, weight modes and a JSON cache.

>>> stats = ClassStatistics.from_folder("labelsTr", num_classes=4)      # doctest: +SKIP
>>> a, b = stats.weights(mode="mean", patch_size=(128, 128))            # doctest: +SKIP
"""

from monai_mime.stats.cache import CacheWarning, CorruptStatisticsError
from monai_mime.stats.counting import count_labels
from monai_mime.stats.counts import ABSENT_RULES, DEFAULT_MODE, WEIGHT_MODES, ClassStatistics
from monai_mime.stats.empty_share import EmptyShare, attach_empty_share, compute_empty_share

__all__ = [
    "ABSENT_RULES",
    "DEFAULT_MODE",
    "WEIGHT_MODES",
    "CacheWarning",
    "ClassStatistics",
    "CorruptStatisticsError",
    "EmptyShare",
    "attach_empty_share",
    "compute_empty_share",
    "count_labels",
]
