"""Dataset-level class statistics and Mime's a/b weights (Eq. 3 of Kervadec & de Bruijne, MIDL 2023).

Notation (``docs/losses.md``): ``N`` images, ``K`` classes, ``G_nk`` the number of voxels of class k in image n,
``|Ω_n|`` the number of counted (non-ignored) voxels of image n, ``Ḡ_k = mean_n G_nk`` and
``B̄_k = mean_n (|Ω_n| − G_nk)`` the mean foreground and background counts of class k per image. With a
``patch_size`` of ``p`` voxels, every image's counts are rescaled to a patch, ``G_nk · p / S_n`` with ``S_n`` the
image's full size (counted + ignored voxels), so ``Ḡ_k`` and ``B̄_k`` become mean counts per patch.

Weight modes (:data:`WEIGHT_MODES`, one function each; every mode has the threshold ``b_k / (a_k + b_k)`` above
which the linear Mime loss prefers class k at a voxel):

- ``"paper"``  Eq. 3 read literally: ``a_k = 1 / (N Σ_n G_nk) = 1 / (N² Ḡ_k)``, ``b_k = 1 / (N² B̄_k)``.
- ``"mean"``   inverse mean count per image: ``a_k = 1 / Ḡ_k``, ``b_k = 1 / B̄_k`` — the natural reading of Eq. 3
  (the literal one divides by ``N`` once more, which only rescales it). Its ratio ``a/b = B̄/Ḡ`` puts the decision
  threshold at the foreground fraction (~1 % on ACDC): it over-segments, measured on ACDC and on the built-in data.
- ``"dice"``   Eq. 2 at an operating point (prediction as large as the object, overlap ``r``, ``overlap=0.5``):
  ``a_k = (2 − r) / (2 Ḡ_k)``, ``b_k = r / (2 Ḡ_k)``; threshold ``r / 2``.
- ``"balance"`` (default, ``gamma=0.5``) a balance exponent ``γ`` on the Eq. 3 ratio with ``a_k = 1 / Ḡ_k`` fixed:
  ``b_k = a_k (Ḡ_k / B̄_k)^γ``, i.e. ``a_k / b_k = (B̄_k / Ḡ_k)^γ``; γ = 1 is ``"mean"``, γ = 0 is ``a_k = b_k``.

The default, ``"balance"`` with γ = 0.5 (the square root of the Eq. 3 ratio), was chosen by the ablation
(``docs/explanation/which_ab.md``): as the starting point of :class:`monai_mime.AdaptiveMimeLoss` it gave the best
mean Dice on the built-in rare-class data (2 seeds) and matched the best on ACDC's val split; as fixed weights it is
the only mode that kept the rare class alive on the built-in data (it over-segments on ACDC, where ``"dice"`` does
better).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_mime.stats.cache import FORMAT, VERSION, CorruptStatisticsError, read_json_checked, write_json_atomic
from monai_mime.stats.empty_share import EmptyShare
from monai_mime.stats.nnunet_sources import NnUNetSourcesMixin

__all__ = ["ClassStatistics", "WEIGHT_MODES", "DEFAULT_MODE", "ABSENT_RULES"]

Weights = tuple[np.ndarray, np.ndarray]


# ------------------------------------------------------------------------------------------------ the weight modes
def _paper(fg: np.ndarray, bg: np.ndarray, n: int) -> Weights:
    """Literal Eq. 3: ``a_k = 1/(N Σ_n G_nk)``, ``b_k = 1/(N Σ_n (|Ω_n| − G_nk))`` (``Σ_n = N ×`` the mean)."""
    return 1.0 / (n * n * fg), 1.0 / (n * n * bg)


def _mean(fg: np.ndarray, bg: np.ndarray, n: int) -> Weights:
    """Inverse mean counts: ``a_k = 1/Ḡ_k``, ``b_k = 1/B̄_k``."""
    return 1.0 / fg, 1.0 / bg


def _dice(fg: np.ndarray, bg: np.ndarray, n: int, overlap: float = 0.5) -> Weights:
    """Eq. 2 with ``P = G``, ``I = rG``: ``a_k = (2 − r)/(2 Ḡ_k)``, ``b_k = r/(2 Ḡ_k)``."""
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap must lie in (0, 1], got {overlap}")
    return (2.0 - overlap) / (2.0 * fg), overlap / (2.0 * fg)


def _balance(fg: np.ndarray, bg: np.ndarray, n: int, gamma: float = 0.5) -> Weights:
    """``a_k = 1/Ḡ_k``, ``b_k = a_k (Ḡ_k / B̄_k)^γ``."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    a = 1.0 / fg
    return a, a * (fg / bg) ** gamma


#: mode name -> ``fn(fg, bg, n, **params) -> (a, b)`` with ``fg = Ḡ``, ``bg = B̄`` (length K) and ``n = N``.
WEIGHT_MODES: dict[str, Callable[..., Weights]] = {"paper": _paper, "mean": _mean, "dice": _dice, "balance": _balance}
#: Used when ``mode=None``.
DEFAULT_MODE = "balance"
#: What ``weights`` does for a class that never occurs (or that fills every counted voxel, for b):
#: ``"error"`` raises a ValueError naming the class; ``"one_voxel"`` gives it the weights of a class with one
#: voxel in the whole training set, i.e. a mean count of ``mean_n(scale_n) / N`` (``scale_n = 1`` without a
#: patch size) -- large but finite.
ABSENT_RULES = ("error", "one_voxel")


# ---------------------------------------------------------------------------------------------- ClassStatistics
@dataclass(eq=False, repr=False)
class ClassStatistics(NnUNetSourcesMixin):
    """Per-image voxel counts per class over a training set, and the Mime weights derived from them.

    Build with ``from_labels``, ``from_folder``, ``from_data_dicts``, ``from_nnunet_raw`` or
    ``from_nnunet_preprocessed``; save and load as JSON with :meth:`save` / :meth:`load`.

    Attributes:
        counts: (N, K) int64, ``G_nk`` voxels of class k in image n.
        voxels: (N,) int64, counted voxels per image ``|Ω_n|`` (ignored voxels excluded).
        ignored: (N,) int64, voxels per image under the ignore label.
        case_ids: N image names.
        ignore_index: the ignore label value, or None.
        source: what was counted, with the path as given (e.g. ``"folder:data/labels"``).
        fingerprint: hash of the inputs and counting options (the cache key).
        class_names: K names (``dataset.json`` names for nnU-Net, else the label values; empty at construction: those).
        empty_share: the share of patch positions of one size without each class
            (:func:`~monai_mime.stats.empty_share.attach_empty_share`), or None.
    """

    counts: np.ndarray
    voxels: np.ndarray
    ignored: np.ndarray
    case_ids: list[str]
    ignore_index: int | None = None
    source: str = ""
    fingerprint: str | None = None
    class_names: list[str] = field(default_factory=list)
    empty_share: EmptyShare | None = None

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.voxels = np.asarray(self.voxels, dtype=np.int64).reshape(-1)
        self.ignored = np.asarray(self.ignored, dtype=np.int64).reshape(-1)
        self.case_ids = [str(c) for c in self.case_ids]
        n = len(self.case_ids)
        if self.counts.ndim != 2 or self.counts.shape[0] != n or not self.voxels.shape == self.ignored.shape == (n,):
            raise ValueError(f"counts must be (N, K) and voxels, ignored (N,) for the N={n} case ids")
        k = self.counts.shape[1]
        if (self.counts < 0).any() or (self.ignored < 0).any() or (self.counts > self.voxels[:, None]).any():
            raise ValueError("counts must be non-negative and at most the image's counted voxels")
        self.class_names = [str(n) for n in self.class_names or ()] or [str(i) for i in range(k)]
        if len(self.class_names) != k:
            raise ValueError(f"{len(self.class_names)} class names for {k} classes")

    @classmethod
    def _build(cls, counts: np.ndarray, **fields: Any) -> ClassStatistics:
        """From label counts: every non-ignored voxel has exactly one class, so ``|Ω_n| = Σ_k G_nk``."""
        return cls(counts=counts, voxels=np.asarray(counts).sum(axis=1), **fields)

    def __repr__(self) -> str:
        return (
            f"ClassStatistics(num_images={self.num_images}, num_classes={self.num_classes}, "
            f"total_counts={self.total_counts.tolist()}, ignore_index={self.ignore_index}, "
            f"source={self.source!r})"
        )

    # ------------------------------------------------------------------------------------------ derived values
    @property
    def num_classes(self) -> int:
        """K."""
        return int(self.counts.shape[1])

    @property
    def num_images(self) -> int:
        """N."""
        return int(self.counts.shape[0])

    @property
    def total_counts(self) -> np.ndarray:
        """(K,) ``Σ_n G_nk``."""
        return self.counts.sum(axis=0)

    @property
    def total_voxels(self) -> int:
        """``Σ_n |Ω_n|`` (counted voxels)."""
        return int(self.voxels.sum())

    @property
    def fractions(self) -> np.ndarray:
        """(K,) share of all counted voxels per class."""
        return self.total_counts / max(self.total_voxels, 1)

    @property
    def presence(self) -> np.ndarray:
        """(K,) number of images in which the class occurs."""
        return (self.counts > 0).sum(axis=0)

    @property
    def mean_counts(self) -> np.ndarray:
        """(K,) ``Ḡ_k``, the mean count per image (0 for an empty dataset)."""
        return self.counts.mean(axis=0) if self.num_images else np.zeros(self.num_classes)

    def _scaled_means(self, patch_size: Sequence[int] | int | None, absent: str) -> tuple[np.ndarray, np.ndarray]:
        """``(Ḡ, B̄)`` per image or per patch, with the ``absent`` rule applied to zero totals."""
        if absent not in ABSENT_RULES:
            raise ValueError(f"absent must be one of {ABSENT_RULES}, got {absent!r}")
        if self.total_voxels == 0:
            raise ValueError("no images (or only empty / fully ignored ones) were counted: no weights")
        size = (self.voxels + self.ignored).astype(np.float64)
        if patch_size is None:
            scale = np.ones_like(size)
        else:
            p = float(np.prod(np.atleast_1d(patch_size)))
            if p <= 0:
                raise ValueError(f"patch_size must be positive, got {patch_size}")
            scale = np.divide(p, size, out=np.zeros_like(size), where=size > 0)
        fg = (self.counts * scale[:, None]).mean(axis=0)
        bg = ((self.voxels[:, None] - self.counts) * scale[:, None]).mean(axis=0)
        for means, what in ((fg, "never occurs"), (bg, "fills every counted voxel")):
            for k in np.flatnonzero(means <= 0):
                if absent == "error":
                    raise ValueError(
                        f"class {k} ({self.class_names[k]}) {what} in the {self.num_images} images: its weight "
                        f"would be infinite; drop the class (regions / include_background=False) or pass "
                        f"absent='one_voxel' (command line: --absent one_voxel)"
                    )
                means[k] = scale.mean() / self.num_images
        return fg, bg

    def weights(
        self,
        mode: str | None = None,
        patch_size: Sequence[int] | int | None = None,
        *,
        absent: str = "error",
        **params: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mime's constants ``(a, b)``, float64 arrays of length K (formulas in the module docstring).

        Scale: every mode's ``a_k`` is of the order ``1/Ḡ_k``, the size of the Soft Dice foreground gradient
        ``2/G`` (Eq. 2 with ``I = P = 0``) of an image (or patch) of average class size, independent of N. The
        literal Eq. 3 (``"paper"``) is divided by N² more, which on a real dataset puts the gradients far below
        Adam's ``eps`` (1e-8) and slows learning. Ratio: ``"mean"`` keeps Eq. 3's ``a_k/b_k = B̄_k/Ḡ_k``, whose
        threshold ``b/(a+b)`` is the class's voxel fraction (about 1 % on ACDC) and over-segments; the default,
        ``"balance"`` with γ = 0.5, takes its square root (chosen by the ablation, ``docs/explanation/which_ab.md``).

        Args:
            mode: a key of :data:`WEIGHT_MODES`; None means :data:`DEFAULT_MODE`.
            patch_size: spatial size of the training patches; rescales counts to a patch (module docstring).
            absent: :data:`ABSENT_RULES` -- what to do with a class that never occurs.
            **params: the mode's parameters: ``overlap`` ("dice"), ``gamma`` ("balance").

        Raises:
            ValueError: unknown mode, bad parameter value, no images, or a class that never occurs with
                ``absent="error"`` (the message names the class).
            TypeError: a parameter the mode does not take.
        """
        mode = DEFAULT_MODE if mode is None else mode
        if mode not in WEIGHT_MODES:
            raise ValueError(f"unknown weight mode {mode!r}; choose one of {', '.join(WEIGHT_MODES)}")
        fn = WEIGHT_MODES[mode]
        accepted = list(inspect.signature(fn).parameters)[3:]
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise TypeError(f"weight mode {mode!r} takes {accepted or 'no parameters'}, not {unknown}")
        fg, bg = self._scaled_means(patch_size, absent)
        a, b = fn(fg, bg, self.num_images, **params)
        return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)

    def thresholds(
        self, mode: str | None = None, patch_size: Sequence[int] | int | None = None, **kwargs: Any
    ) -> np.ndarray:
        """(K,) ``b_k / (a_k + b_k)``: the probability of class k above which Mime pushes a voxel towards k.

        Same arguments as :meth:`weights`.
        """
        a, b = self.weights(mode, patch_size, **kwargs)
        return b / (a + b)

    # ------------------------------------------------------------------------------------------- restructuring
    def regions(self, regions: Sequence[int | Sequence[int]], names: Sequence[str] | None = None) -> ClassStatistics:
        """Statistics of regions, each a union of labels (nnU-Net region training, BraTS-style).

        Labels are disjoint, so a region's count is the sum of its labels' counts; ``voxels`` and ``ignored`` are
        unchanged (a region's background is every other counted voxel).
        """
        cols, region_names = [], []
        for r in regions:
            labels = (int(r),) if isinstance(r, (int, np.integer)) else tuple(int(x) for x in r)
            if not labels or len(set(labels)) != len(labels) or not all(0 <= x < self.num_classes for x in labels):
                raise ValueError(f"region {r}: labels must be distinct values in [0, {self.num_classes})")
            cols.append(self.counts[:, list(labels)].sum(axis=1))
            region_names.append("+".join(self.class_names[x] for x in labels))
        return ClassStatistics(
            counts=np.stack(cols, axis=1) if cols else np.zeros((self.num_images, 0), np.int64),
            voxels=self.voxels.copy(),
            ignored=self.ignored.copy(),
            case_ids=list(self.case_ids),
            ignore_index=self.ignore_index,
            source=f"{self.source} regions={'/'.join(region_names)}",
            fingerprint=self.fingerprint,
            class_names=list(names) if names is not None else region_names,
        )

    def subset(self, case_ids: Sequence[str]) -> ClassStatistics:
        """The statistics of some of the images (e.g. the training cases of a split), in the given order."""
        index = {c: i for i, c in enumerate(self.case_ids)}
        missing = [c for c in case_ids if c not in index]
        if missing:
            raise ValueError(f"cases not in these statistics: {', '.join(missing[:5])}")
        rows = [index[c] for c in case_ids]
        return ClassStatistics(
            counts=self.counts[rows],
            voxels=self.voxels[rows],
            ignored=self.ignored[rows],
            case_ids=list(case_ids),
            ignore_index=self.ignore_index,
            source=self.source,
            fingerprint=self.fingerprint,
            class_names=list(self.class_names),
        )

    # ---------------------------------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """The JSON document (without checksum): metadata, a summary for human readers, one row per image."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "class_names": self.class_names,
            "summary": {
                "num_images": self.num_images,
                "total_voxels": self.total_voxels,
                "total_ignored": int(self.ignored.sum()),
                "total_counts": self.total_counts.tolist(),
                "fractions": [round(float(f), 8) for f in self.fractions],
                "presence": self.presence.tolist(),
            },
            "images": [
                {"case": c, "voxels": int(v), "ignored": int(i), "counts": row.tolist()}
                for c, v, i, row in zip(self.case_ids, self.voxels, self.ignored, self.counts)
            ],
        } | ({} if self.empty_share is None else {"empty_share": self.empty_share.to_dict()})

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ClassStatistics:
        """Inverse of :meth:`to_dict` (the ``summary`` is recomputed, not read)."""
        try:
            images = doc["images"]
            k = int(doc["num_classes"])
            stats = cls(
                counts=np.array([r["counts"] for r in images], dtype=np.int64).reshape(len(images), k),
                voxels=np.array([r["voxels"] for r in images], dtype=np.int64),
                ignored=np.array([r["ignored"] for r in images], dtype=np.int64),
                case_ids=[r["case"] for r in images],
                ignore_index=doc["ignore_index"],
                source=doc["source"],
                fingerprint=doc["fingerprint"],
                class_names=doc["class_names"],
                empty_share=EmptyShare.from_dict(doc["empty_share"]) if "empty_share" in doc else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptStatisticsError(f"malformed statistics document: {type(e).__name__}: {e}") from None
        return stats

    def save(self, path: str | Path) -> Path:
        """Write the statistics as human-readable JSON with a checksum, atomically (temp file + rename)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, num_classes: int | None = None) -> ClassStatistics:
        """Read a file written by :meth:`save`; a corrupt file raises
        :class:`~monai_mime.stats.cache.CorruptStatisticsError` (a ValueError), a different ``num_classes`` a
        ValueError."""
        doc = read_json_checked(path)
        try:
            stats = cls.from_dict(doc)
        except CorruptStatisticsError as e:
            raise CorruptStatisticsError(f"{path}: {e}") from None
        if num_classes is not None and num_classes != stats.num_classes:
            raise ValueError(f"{path} holds statistics of {stats.num_classes} classes, {num_classes} were requested")
        return stats
