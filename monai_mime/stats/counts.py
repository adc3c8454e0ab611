"""Dataset-level class statistics and Mime's a/b weights (Eq. 3 of Kervadec & de Bruijne, MIDL 2023).

Notation (``docs/equations.md``): ``N`` images, ``K`` classes, ``G_nk`` the number of voxels of class k in image n,
``|Ω_n|`` the number of counted (non-ignored) voxels of image n, ``Ḡ_k = mean_n G_nk`` and
``B̄_k = mean_n (|Ω_n| − G_nk)`` the mean foreground and background counts of class k per image. With a
``patch_size`` of ``p`` voxels, every image's counts are rescaled to a patch, ``G_nk · p / S_n`` with ``S_n`` the
image's full size (counted + ignored voxels), so ``Ḡ_k`` and ``B̄_k`` become mean counts per patch.

The weight modes (``"paper"``, ``"mean"``, ``"dice"``, ``"balance"``) are :mod:`monai_mime.stats.weight_modes`; the
constructors from labels, folders, data dicts and nnU-Net datasets are :mod:`~monai_mime.stats.sources` and
:mod:`~monai_mime.stats.nnunet_sources`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_mime.stats import nnunet_sources, sources
from monai_mime.stats.cache import FORMAT, VERSION, CorruptStatisticsError, read_json_checked, write_json_atomic
from monai_mime.stats.empty_share import EmptyShare
from monai_mime.stats.readers import PathLike
from monai_mime.stats.sources import CacheArg
from monai_mime.stats.weight_modes import ABSENT_RULES, DEFAULT_MODE, WEIGHT_MODES, mode_parameters

__all__ = ["ClassStatistics", "WEIGHT_MODES", "DEFAULT_MODE", "ABSENT_RULES"]


# ---------------------------------------------------------------------------------------------- ClassStatistics
@dataclass(eq=False, repr=False)
class ClassStatistics:
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

    # ------------------------------------------------------------------------------------------- constructors
    @classmethod
    def from_labels(
        cls,
        labels: Iterable[Any],
        num_classes: int | None,
        ignore_index: int | None = None,
        case_ids: Sequence[str] | None = None,
        progress: bool = False,
    ) -> ClassStatistics:
        """Statistics of label maps given as numpy arrays or torch tensors (any iterable, e.g. a generator).

        Each element is one image (any shape; a batch counts as one image). ``num_classes=None`` infers K as the
        largest label + 1. The fingerprint is a hash of the resulting counts (in-memory data are not cached).
        """
        return sources.from_labels(cls, labels, num_classes, ignore_index, case_ids, progress)

    @classmethod
    def from_folder(
        cls,
        path: PathLike,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        num_workers: int | None = None,
        cache: CacheArg = True,
        progress: bool = True,
    ) -> ClassStatistics:
        """Statistics of the label images in a folder (``.nii``/``.nii.gz`` via nibabel, ``.npy``, SimpleITK formats).

        ``num_workers=None``: one process below 256 files, else up to 8 (``os.cpu_count()``). Case ids are the file
        names without their ending. ``cache=True``: a file under :func:`~monai_mime.stats.cache.default_cache_dir`;
        a path: that file; ``False``: none. The cache is keyed by the fingerprint of the files and options.
        """
        return sources.from_folder(cls, path, num_classes, ignore_index, num_workers, cache, progress)

    @classmethod
    def from_data_dicts(
        cls,
        data: Any,
        label_key: str = "label",
        num_classes: int | None = None,
        ignore_index: int | None = None,
        num_workers: int | None = None,
        cache: CacheArg = True,
        progress: bool = True,
    ) -> ClassStatistics:
        """Statistics of MONAI data dicts (``[{"image": ..., "label": path_or_array}, ...]``) or a MONAI ``Dataset``.

        A list of dicts whose labels are all file paths is read with ``monai.transforms.LoadImage`` (in worker
        processes, cached). A ``Dataset`` (anything with ``__getitem__`` and ``__len__`` that is not a list or
        tuple) is indexed, so its transforms apply: count what the network sees (deterministic transforms such as
        ``LoadImaged``/``Spacingd``; a patch sampler returning a list counts each patch as one image).
        """
        return sources.from_data_dicts(cls, data, label_key, num_classes, ignore_index, num_workers, cache, progress)

    @classmethod
    def from_nnunet_raw(
        cls,
        dataset_folder: PathLike,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        cases: Sequence[str] | None = None,
        num_workers: int | None = None,
        cache: CacheArg = True,
        progress: bool = True,
    ) -> ClassStatistics:
        """Statistics of an nnU-Net v2 raw dataset (``dataset.json`` + ``labelsTr``), all cases or ``cases``.

        K and the ignore label come from ``dataset.json`` (a label named ``"ignore"``, the highest value, as in
        nnU-Net); passing different values is an error. Does not need nnunetv2.
        """
        return nnunet_sources.from_nnunet_raw(
            cls, dataset_folder, num_classes, ignore_index, cases, num_workers, cache, progress
        )

    @classmethod
    def from_nnunet_preprocessed(
        cls,
        preprocessed_dataset_folder: PathLike,
        configuration: str | None = None,
        fold: int | str = 0,
        plans_identifier: str = "nnUNetPlans",
        num_workers: int | None = None,
        cache: CacheArg = True,
        progress: bool = True,
    ) -> ClassStatistics:
        """Statistics of the training cases of one fold of an nnU-Net v2 preprocessed dataset.

        Counts the segmentations nnU-Net trains on (resampled and cropped), read with nnU-Net's own dataset class;
        the cases are those ``nnUNetTrainer.do_split`` picks (``fold="all"`` is every case). -1 (background outside
        the crop mask) counts as background 0, as in nnU-Net's training pipeline. ``configuration=None``: the first
        of "3d_fullres", "2d", "3d_lowres" that is planned and preprocessed.
        """
        return nnunet_sources.from_nnunet_preprocessed(
            cls, preprocessed_dataset_folder, configuration, fold, plans_identifier, num_workers, cache, progress
        )

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
        threshold ``b/(a+b)`` is the class's voxel fraction; the default, ``"balance"`` with γ = 0.5, takes its
        square root (chosen by the ablation, ``docs/explanation/which_ab.md``).

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
        accepted = mode_parameters(mode)
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
