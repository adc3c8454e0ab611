"""Patch-based training and evaluation of the losses, as importable functions.

``examples/train_patches.py`` is the command line over this module; an ablation imports it directly::

    import sys; sys.path.insert(0, "examples")
    from patch_training import ExperimentConfig, prepare_data, run_experiment

    config = ExperimentConfig(data="../shared/data/Dataset027_ACDC", patch_size=(128, 128), epochs=30,
                              steps_per_epoch=250, eval_epochs=(12,), out=None)
    data = prepare_data(config)                       # load once, reuse for many settings and seeds
    for seed in (0, 1):
        for spec in ["mime:mode=dice:overlap=0.5", "mime:mode=balance:gamma=0.5", "dice"]:
            res = run_experiment(config.replace(losses=[spec], seed=seed), data=data)
            entry = res["losses"][spec]
            print(seed, spec, entry["mean"]["dice"], entry["intermediate"]["12"]["mean"]["dice"])

``seed`` changes the training only (initialisation, sampling, crops); ``data_seed`` the built-in data. With the
constant learning rate and epoch-seeded sampling, the evaluation after epoch ``e`` (``eval_epochs``) is exactly
what a run of ``e`` epochs gives, so one run scores several training budgets.

What one experiment does, for each loss spec, from the same seed:

1. 2D training items: the images of the built-in synthetic data (:mod:`monai_mime.synthetic`), or the 2D
   slices of the training volumes of an nnU-Net raw dataset (slices taken across the axis with the
   coarsest spacing, e.g. the short-axis stack of ACDC), z-score normalised per image/volume.
2. Uniform random patches (``RandSpatialCropd`` after ``SpatialPadd``) of uniformly drawn training
   items, ``batch_size`` per step and ``steps_per_epoch`` steps per epoch per process.
3. A MONAI 2D ``UNet``, Adam, mixed precision on CUDA, DDP under ``torchrun``.
4. Loss from the registry (:func:`monai_mime.get_loss`); Mime's a/b from :class:`monai_mime.ClassStatistics`
   over the training labels only, rescaled to the patch size by default.
5. ``sliding_window_inference`` over each whole held-out image (slice by slice for volumes), then per-class
   Dice, HD95 (paper conventions, :mod:`monai_mime.metrics`, in physical units for volumes) and the
   predicted/true volume ratio.

Loss specs
----------
A spec is ``name[:key=value[:key=value...]]``; a list of specs is comma-separated. ``name`` is a registered
loss (:func:`monai_mime.list_losses`). Values are parsed as ``true``/``false``, ``none``, integers, floats, or
lists of numbers written ``1/2/3``; anything else stays a string. Every loss gets ``to_onehot_y=True,
softmax=True`` (when it accepts them) plus the spec's options, e.g. ``dice:include_background=false``,
``gdl:w_type=simple``, ``ce``. Every loss is called as ``loss(logits (B, K, H, W), labels (B, 1, H, W))``.
For ``mime`` and every other name that builds a :class:`monai_mime.MimeLoss` (``mime_adaptive``, your own
subclasses), unless ``a=`` and ``b=`` are given explicitly:

- ``mode=M`` picks the weight mode of :meth:`ClassStatistics.weights` (default: its default);
- ``patch=false`` uses per-image statistics instead of rescaling them to the training patch size;
- constructor options (``include_background``, ``batch``, ``reduction``, ``momentum``...) go to the loss;
- any other option goes to ``ClassStatistics.weights`` as a mode parameter (``overlap=0.5``, ``gamma=0.5``).

The spec text (whitespace removed) names the run in ``results.json``, ``results.md`` and the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEFAULT_LOSSES",
    "Case",
    "ExperimentConfig",
    "ExperimentError",
    "LossSpec",
    "PatchSampler",
    "PreparedData",
    "build_loss",
    "build_model",
    "evaluate_model",
    "parse_loss_specs",
    "plot_results",
    "prepare_data",
    "run_experiment",
    "train_model",
    "write_results",
]

DEFAULT_LOSSES: tuple[str, ...] = ("mime_adaptive", "mime", "dice", "vnet", "gdl", "ce")


class ExperimentError(Exception):
    """A problem with the user's input (data folder, loss spec, settings): reported as one line, no traceback."""


# ======================================================================================================
# configuration
# ======================================================================================================
@dataclass
class ExperimentConfig:
    """Every setting of one experiment (all losses share them). Field names match the command-line flags."""

    data: str | None = None  #: nnU-Net raw dataset folder; None: the built-in synthetic data
    losses: list[str] = field(default_factory=lambda: list(DEFAULT_LOSSES))  #: loss specs (module docstring)
    out: str | None = "results/synthetic"  #: output folder; None: write nothing
    device: str = "auto"  #: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"
    seed: int = 0  #: seeds the model initialisation, the patch sampling and the crops
    data_seed: int = 0  #: seeds the synthetic data and the train/val split of a folder without splits.json
    epochs: int = 12
    steps_per_epoch: int = 100  #: optimizer steps per epoch (per process under DDP)
    batch_size: int = 8  #: patches per step (per process)
    patch_size: tuple[int, int] = (64, 64)
    lr: float = 1e-3
    channels: tuple[int, ...] = (16, 32, 64, 128)  #: UNet feature maps per level
    num_res_units: int = 1
    num_workers: int = 0  #: DataLoader workers for patch sampling (crops are reproducible per num_workers value)
    amp: bool = True  #: float16 autocast + GradScaler (CUDA only)
    sw_batch_size: int = 16  #: windows per forward pass in sliding-window inference
    sw_overlap: float = 0.25
    max_val_cases: int | None = None  #: evaluate on the first N held-out cases only
    val_fraction: float = 0.2  #: held-out share when an nnU-Net folder has no splits.json
    exclude_both_empty: bool = False  #: metric option: leave (case, class) out when absent from both
    eval_epochs: tuple[int, ...] = ()  #: also evaluate after these epochs (several budgets from one run)
    synthetic_train: int = 200  #: built-in data: training images
    synthetic_val: int = 50  #: built-in data: held-out images
    synthetic_size: tuple[int, int] = (128, 128)
    synthetic_rare_probability: float = 0.25
    checkpoints: bool = True  #: save each loss's final model under out/checkpoints
    figure: bool = True  #: write out/results.png
    progress: bool | None = None  #: tqdm bars; None: only on a terminal (else one log line per epoch)
    threads: int = 1  #: torch CPU threads per process (0: torch's default); see below

    # One thread per process is the default: these small 2D models gain little from intra-op threads, and on a
    # shared or oversubscribed CPU OpenMP's busy-waiting makes 2 threads 3-50x *slower* than 1 (measured). To
    # use N cores, run N processes: ``torchrun --nproc_per_node N`` (DDP on the CPU with gloo).

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def quick(cls, **changes: Any) -> ExperimentConfig:
        """The ``--quick`` preset: every loss in well under a minute on 2 CPU cores (a smoke run)."""
        base = dict(
            epochs=2,
            steps_per_epoch=100,
            batch_size=8,
            channels=(8, 16, 32),
            synthetic_train=60,
            synthetic_val=12,
            synthetic_size=(96, 96),
            out="results/quick",
        )
        base.update(changes)
        return cls(**base)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Raise :class:`ExperimentError` on impossible settings."""
        positive = ("epochs", "steps_per_epoch", "batch_size", "sw_batch_size", "synthetic_train", "synthetic_val")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ExperimentError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if len(self.patch_size) != 2 or min(self.patch_size) < 8:
            raise ExperimentError(f"patch-size must be two sizes of at least 8, got {tuple(self.patch_size)}")
        depth = len(self.channels) - 1
        if depth < 1:
            raise ExperimentError("channels must list at least two feature sizes")
        if any(p % (2**depth) for p in self.patch_size):
            raise ExperimentError(
                f"patch-size {tuple(self.patch_size)} must be divisible by {2**depth} "
                f"(the UNet downsamples {depth} times)"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ExperimentError(f"val-fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ExperimentError(f"sw-overlap must be in [0, 1), got {self.sw_overlap}")
        if self.threads < 0:
            raise ExperimentError(f"threads must be >= 0, got {self.threads}")
        if self.num_workers < 0:
            raise ExperimentError(f"num-workers must be >= 0, got {self.num_workers}")
        if not self.losses:
            raise ExperimentError("no loss given")
        bad = [e for e in self.eval_epochs if not 1 <= int(e) <= self.epochs]
        if bad:
            raise ExperimentError(f"eval-epochs must lie in [1, epochs={self.epochs}], got {bad}")


# ======================================================================================================
# loss specs
# ======================================================================================================
_SPEC_RE = re.compile(r"^[A-Za-z_][\w.\-]*$")


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if "/" in text:
        try:
            return [float(p) for p in text.split("/")]
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class LossSpec:
    """One loss to train: a registered ``name`` and its ``options``; ``text`` is its label."""

    name: str
    options: dict[str, Any]
    text: str

    @classmethod
    def parse(cls, text: str) -> LossSpec:
        """Parse ``name[:key=value...]`` (see the module docstring); raise :class:`ExperimentError` if malformed."""
        text = re.sub(r"\s+", "", text)
        name, *parts = text.split(":")
        if not name or not _SPEC_RE.match(name):
            raise ExperimentError(f"bad loss spec {text!r}: expected name[:key=value[:key=value...]]")
        options: dict[str, Any] = {}
        for part in parts:
            key, eq, value = part.partition("=")
            if not eq or not key.isidentifier():
                raise ExperimentError(f"bad option {part!r} in loss spec {text!r}: expected key=value")
            if key in options:
                raise ExperimentError(f"option {key!r} given twice in loss spec {text!r}")
            options[key] = _parse_value(value)
        return cls(name=name, options=options, text=text)


def parse_loss_specs(specs: str | Sequence[str]) -> list[LossSpec]:
    """Parse a comma-separated string (or a list of specs) and check the names against the registry."""
    from monai_mime import list_losses

    items = specs.split(",") if isinstance(specs, str) else [s for x in specs for s in str(x).split(",")]
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ExperimentError("no loss given")
    parsed = [LossSpec.parse(s) for s in items]
    known = list_losses()
    for p in parsed:
        if p.name not in known:
            raise ExperimentError(f"unknown loss {p.name!r}; registered losses: {', '.join(known)}")
    seen: set[str] = set()
    for p in parsed:
        if p.text in seen:
            raise ExperimentError(f"loss spec {p.text!r} given twice")
        seen.add(p.text)
    return parsed


def _constructor_kwargs(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
    return names


_MIME_CLASSES: dict[str, type | None] = {}


def _mime_class(name: str) -> type | None:
    """The MimeLoss subclass a registered name builds (``mime``, ``mime_adaptive``, user ones), else None.

    Found by building the loss from dummy ``a``/``b``: a Mime-like factory accepts them, the others refuse."""
    from monai_mime import MimeLoss, get_loss

    if name not in _MIME_CLASSES:
        try:
            probe = get_loss(name, a=[1.0, 1.0], b=[1.0, 1.0])
        except Exception:  # noqa: BLE001 - any refusal means "not a Mime-like loss"
            probe = None
        _MIME_CLASSES[name] = type(probe) if isinstance(probe, MimeLoss) else None
    return _MIME_CLASSES[name]


def build_loss(
    spec: LossSpec | str,
    stats: Any = None,
    patch_size: Sequence[int] | None = None,
) -> nn.Module:
    """Instantiate ``spec`` through the registry, for logits ``(B, K, H, W)`` and label maps ``(B, 1, H, W)``.

    Args:
        spec: a :class:`LossSpec` or its text.
        stats: :class:`monai_mime.ClassStatistics` of the training labels (needed by ``mime`` without a/b).
        patch_size: training patch size, for Mime's patch rescaling (``patch=false`` turns it off).

    Raises:
        ExperimentError: bad options (the loss's own error message, on one line).
    """
    from monai_mime import get_loss

    if isinstance(spec, str):
        spec = LossSpec.parse(spec)
    opts = dict(spec.options)
    defaults: dict[str, Any] = {"to_onehot_y": True, "softmax": True}
    mime_class = _mime_class(spec.name)
    try:
        if mime_class is not None and not ("a" in opts or "b" in opts):
            if stats is None:
                raise ExperimentError(f"{spec.name} needs dataset statistics (or explicit a= and b=)")
            use_patch = bool(opts.pop("patch", True))
            mode = opts.pop("mode", None)
            ctor_names = _constructor_kwargs(mime_class)
            ctor = {k: opts.pop(k) for k in list(opts) if k in ctor_names}
            return get_loss(
                spec.name,
                stats=stats,
                mode=mode,
                patch_size=tuple(patch_size) if (use_patch and patch_size is not None) else None,
                weight_kwargs=opts,
                **{**defaults, **ctor},
            )
        try:
            return get_loss(spec.name, **{**defaults, **opts})
        except TypeError as e:
            if not any(k in str(e) for k in defaults):
                raise
            return get_loss(spec.name, **opts)
    except ExperimentError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExperimentError(f"loss {spec.text!r}: {msg}") from None


# ======================================================================================================
# data
# ======================================================================================================
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
            try:
                from monai_mime import ClassStatistics
            except ImportError:  # older layouts export it from the subpackage only
                from monai_mime.stats import ClassStatistics

            try:
                self._stats = ClassStatistics.from_labels(
                    (it["label"][0] for it in self.train_items), num_classes=self.num_classes
                )
            except ValueError as e:
                raise ExperimentError(f"class statistics of the training labels: {e}") from None
        return self._stats

    def example(self) -> tuple[int, int | None]:
        """(val case index, slice index) of a held-out slice showing as many classes as possible."""
        best, best_score = (0, None), -1.0
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


def _normalise(image: np.ndarray) -> np.ndarray:
    """Z-score each channel (MONAI ``NormalizeIntensity(channel_wise=True)``, nnU-Net's default)."""
    from monai.transforms import NormalizeIntensity

    out = NormalizeIntensity(channel_wise=True)(image)
    return np.asarray(out, dtype=np.float32)


def _synthetic_data(config: ExperimentConfig) -> PreparedData:
    from monai_mime.synthetic import CLASS_NAMES, make_dataset

    kw = {"spatial_size": tuple(config.synthetic_size), "rare_probability": config.synthetic_rare_probability}
    try:
        tr_x, tr_y = make_dataset(config.synthetic_train, seed=config.data_seed, **kw)  # type: ignore[arg-type]
        va_x, va_y = make_dataset(
            config.synthetic_val,
            seed=config.data_seed,
            start=config.synthetic_train,
            **kw,  # type: ignore[arg-type]
        )
    except ValueError as e:
        raise ExperimentError(f"synthetic data: {e}") from None
    train = [{"image": _normalise(x[None]), "label": y[None]} for x, y in zip(tr_x, tr_y, strict=True)]
    val = [
        Case(f"synthetic_{config.synthetic_train + i:03d}", _normalise(x[None]), y, (1.0, 1.0))
        for i, (x, y) in enumerate(zip(va_x, va_y, strict=True))
    ]
    if config.max_val_cases is not None:
        val = val[: config.max_val_cases]
    return PreparedData(
        name="synthetic",
        class_names=list(CLASS_NAMES),
        in_channels=1,
        train_items=train,
        val_cases=val,
        slice_axis=None,
        num_train_cases=len(train),
        spacing_unit="px",
        source=f"monai_mime.synthetic (data seed {config.data_seed}, {tuple(config.synthetic_size)})",
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ExperimentError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExperimentError(f"{path} is not valid JSON ({e})") from None


def _nnunet_cases(folder: Path) -> tuple[dict[str, Any], list[str], list[str], str]:
    """Check an nnU-Net raw dataset folder: (dataset.json, class names, case ids, file ending)."""
    if not folder.exists():
        raise ExperimentError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise ExperimentError(f"data path {folder} is not a folder")
    meta = _read_json(folder / "dataset.json")
    if not isinstance(meta, dict):
        raise ExperimentError(f"{folder / 'dataset.json'}: expected a JSON object")
    for key in ("labels", "channel_names", "file_ending"):
        if key not in meta:
            raise ExperimentError(f"{folder / 'dataset.json'} has no {key!r} entry")
    labels = meta["labels"]
    if not isinstance(labels, dict) or not labels:
        raise ExperimentError(f"{folder / 'dataset.json'}: 'labels' must map names to label values")
    if "ignore" in labels:
        raise ExperimentError("dataset.json declares an 'ignore' label, which this example does not support")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in labels.values()):
        raise ExperimentError(
            "dataset.json 'labels' must map each name to one integer (region-based labels are not supported here)"
        )
    values = sorted(labels.values())
    if values != list(range(len(values))):
        raise ExperimentError(f"dataset.json label values must be 0..K-1 without gaps, got {values}")
    names = [n for n, _ in sorted(labels.items(), key=lambda kv: kv[1])]
    ending = str(meta["file_ending"])
    for sub in ("imagesTr", "labelsTr"):
        if not (folder / sub).is_dir():
            raise ExperimentError(f"{folder / sub} does not exist (expected an nnU-Net raw dataset folder)")
    case_ids = sorted(p.name[: -len(ending)] for p in (folder / "labelsTr").iterdir() if p.name.endswith(ending))
    if not case_ids:
        raise ExperimentError(f"no label file ending in {ending!r} in {folder / 'labelsTr'}")
    n_train = meta.get("numTraining")
    if isinstance(n_train, int) and n_train != len(case_ids):
        raise ExperimentError(
            f"dataset.json says numTraining={n_train} but {folder / 'labelsTr'} has {len(case_ids)} label files"
        )
    n_ch = len(meta["channel_names"])
    for cid in case_ids:
        for c in range(n_ch):
            if not (folder / "imagesTr" / f"{cid}_{c:04d}{ending}").is_file():
                raise ExperimentError(f"missing image {folder / 'imagesTr' / f'{cid}_{c:04d}{ending}'}")
    return meta, names, case_ids, ending


def _split(folder: Path, case_ids: list[str], config: ExperimentConfig) -> tuple[list[str], list[str]]:
    path = folder / "splits.json"
    if path.exists():
        split = _read_json(path)
        if isinstance(split, list) and split and isinstance(split[0], dict):
            split = split[0]  # nnU-Net splits_final.json: fold 0
        if not isinstance(split, dict) or "train" not in split or "val" not in split:
            raise ExperimentError(f"{path} must hold {{'train': [...], 'val': [...]}}")
        known = set(case_ids)
        for key in ("train", "val"):
            missing = [c for c in split[key] if c not in known]
            if missing:
                raise ExperimentError(f"{path}: {key} case {missing[0]!r} has no label file")
        if set(split["train"]) & set(split["val"]):
            raise ExperimentError(f"{path}: train and val lists overlap")
        if not split["train"] or not split["val"]:
            raise ExperimentError(f"{path}: train and val lists must not be empty")
        return list(split["train"]), list(split["val"])
    if len(case_ids) < 2:
        raise ExperimentError("need at least two cases to hold one out")
    rng = np.random.default_rng(config.data_seed)
    order = [case_ids[i] for i in rng.permutation(len(case_ids))]
    n_val = max(1, round(config.val_fraction * len(case_ids)))
    return sorted(order[n_val:]), sorted(order[:n_val])


def _slice_axis(shape: Sequence[int], spacing: Sequence[float]) -> int | None:
    """Axis to take 2D slices across: a singleton axis, else the coarsest spacing (last axis on ties)."""
    if len(shape) == 2:
        return None
    if len(shape) != 3:
        raise ExperimentError(f"only 2D images and 3D volumes are supported, got spatial shape {tuple(shape)}")
    ones = [i for i, n in enumerate(shape) if n == 1]
    if ones:
        return ones[-1]
    sp = np.asarray(spacing, dtype=np.float64)
    return int(np.flatnonzero(sp == sp.max())[-1])


def _nnunet_data(config: ExperimentConfig) -> PreparedData:
    from monai.transforms import LoadImage

    folder = Path(config.data).expanduser()  # type: ignore[arg-type]
    meta, names, case_ids, ending = _nnunet_cases(folder)
    train_ids, val_ids = _split(folder, case_ids, config)
    if config.max_val_cases is not None:
        val_ids = val_ids[: config.max_val_cases]
    n_ch = len(meta["channel_names"])
    loader_img = LoadImage(image_only=True, ensure_channel_first=True, dtype=np.float32)
    loader_lab = LoadImage(image_only=True, ensure_channel_first=False, dtype=None)
    allowed = set(range(len(names)))

    def load(cid: str) -> Case:
        files = [str(folder / "imagesTr" / f"{cid}_{c:04d}{ending}") for c in range(n_ch)]
        lab_file = folder / "labelsTr" / f"{cid}{ending}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = loader_img(files if n_ch > 1 else files[0])
                lab = loader_lab(str(lab_file))
        except Exception as e:  # noqa: BLE001 - any reader failure is a data problem
            raise ExperimentError(f"cannot read case {cid!r}: {str(e).strip().splitlines()[0]}") from None
        spacing = tuple(float(s) for s in np.asarray(lab.pixdim)[: lab.ndim])
        lab_np = np.asarray(lab)
        img_np = np.asarray(img, dtype=np.float32)
        if img_np.shape[1:] != lab_np.shape:
            raise ExperimentError(
                f"case {cid!r}: image shape {img_np.shape[1:]} differs from label shape {lab_np.shape}"
            )
        if not np.all(np.isfinite(lab_np)) or not np.array_equal(lab_np, np.round(lab_np)):
            raise ExperimentError(f"{lab_file}: label map has non-integer values")
        present = {int(v) for v in np.unique(lab_np)}
        extra = sorted(present - allowed)
        if extra:
            raise ExperimentError(
                f"{lab_file} contains label value(s) {extra} not declared in dataset.json labels "
                f"({', '.join(f'{n}={i}' for i, n in enumerate(names))})"
            )
        return Case(cid, _normalise(img_np), lab_np.astype(np.uint8), spacing)

    workers = max(1, min(8, config.num_workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        it = pool.map(load, train_ids + val_ids)
        cases = list(_progress(it, total=len(train_ids) + len(val_ids), desc="loading", config=config))
    train_cases, val_cases = cases[: len(train_ids)], cases[len(train_ids) :]
    axis = _slice_axis(train_cases[0].label.shape, train_cases[0].spacing)
    for c in cases:
        if c.label.ndim != train_cases[0].label.ndim:
            raise ExperimentError(
                f"case {c.case_id!r} has {c.label.ndim} axes, the first training case has {train_cases[0].label.ndim}"
            )
    train_items: list[dict[str, np.ndarray]] = []
    for c in train_cases:
        if axis is None:
            train_items.append({"image": c.image, "label": c.label[None]})
            continue
        img = np.moveaxis(c.image, axis + 1, 1)
        lab = np.moveaxis(c.label, axis, 0)
        for s in range(lab.shape[0]):
            train_items.append({"image": np.ascontiguousarray(img[:, s]), "label": np.ascontiguousarray(lab[s][None])})
    return PreparedData(
        name=str(meta.get("name") or folder.name),
        class_names=names,
        in_channels=n_ch,
        train_items=train_items,
        val_cases=val_cases,
        slice_axis=axis,
        num_train_cases=len(train_cases),
        spacing_unit="mm",
        source=str(folder),
    )


def prepare_data(config: ExperimentConfig) -> PreparedData:
    """Load (or generate) and check the data of ``config``; raise :class:`ExperimentError` on bad input."""
    return _nnunet_data(config) if config.data else _synthetic_data(config)


class PatchSampler(torch.utils.data.distributed.DistributedSampler):
    """A :class:`~torch.utils.data.distributed.DistributedSampler` with a chosen epoch length.

    Every epoch all processes draw the same shuffled sequence of item indices (concatenated random
    permutations of the items, seeded by ``seed`` and the epoch, as DistributedSampler does) and each takes
    its own ``samples_per_replica`` of it: uniform sampling of items, disjoint across processes, the same for
    every loss trained from the same seed. Call :meth:`set_epoch` each epoch.
    """

    def __init__(
        self, num_items: int, samples_per_replica: int, num_replicas: int = 1, rank: int = 0, seed: int = 0
    ) -> None:
        # DistributedSampler needs a sized dataset only for its own __len__/__iter__, which we override.
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)  # type: ignore[arg-type]
        self.num_items = num_items
        self.samples_per_replica = samples_per_replica

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        total = self.samples_per_replica * self.num_replicas
        reps = math.ceil(total / self.num_items)
        order = torch.cat([torch.randperm(self.num_items, generator=g) for _ in range(reps)])[:total]
        return iter(order[self.rank : total : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.samples_per_replica


def _train_transform(patch_size: Sequence[int]) -> Any:
    from monai.transforms import Compose, EnsureTyped, RandSpatialCropd, SpatialPadd

    keys = ["image", "label"]
    return Compose(
        [
            SpatialPadd(keys=keys, spatial_size=tuple(patch_size)),
            RandSpatialCropd(keys=keys, roi_size=tuple(patch_size), random_size=False),
            EnsureTyped(keys=keys, track_meta=False),
        ]
    )


# ======================================================================================================
# model, training, evaluation
# ======================================================================================================
def build_model(in_channels: int, num_classes: int, config: ExperimentConfig) -> nn.Module:
    """MONAI 2D ``UNet`` with ``config.channels`` feature maps (stride 2 between levels)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=tuple(config.channels),
        strides=(2,) * (len(config.channels) - 1),
        num_res_units=config.num_res_units,
    )


@dataclass
class _Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    distributed: bool = False
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def amp(self) -> bool:
        return self.device.type == "cuda"


def _resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ExperimentError(f"--device {spec}: CUDA is not available on this machine")
        return torch.device(spec)
    if spec == "cpu":
        return torch.device("cpu")
    raise ExperimentError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def _setup_runtime(config: ExperimentConfig) -> _Runtime:
    device = _resolve_device(config.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Runtime(device)
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return _Runtime(device, rank=rank, world_size=world, distributed=True, owns_group=owns)


def _bars_on(config: ExperimentConfig) -> bool:
    return bool(config.progress) or (config.progress is None and sys.stderr.isatty())


def _progress(it: Any, total: int | None, desc: str, config: ExperimentConfig, enabled: bool = True, **kw: Any) -> Any:
    from tqdm.auto import tqdm

    disable = not (enabled and _bars_on(config))
    return tqdm(it, total=total, desc=desc, disable=disable, dynamic_ncols=True, leave=False, **kw)


@contextlib.contextmanager
def _track_meta(enabled: bool) -> Iterator[None]:
    """MONAI MetaTensors on or off inside the block. Off in the training loop: plain tensors make the transforms
    about 6x cheaper; back on for the per-epoch evaluation callback, which runs MONAI's default pipeline."""
    from monai.data import get_track_meta, set_track_meta

    old = get_track_meta()
    set_track_meta(enabled)
    try:
        yield
    finally:
        set_track_meta(old)


def _log(msg: str, rt: _Runtime | None = None) -> None:
    if rt is None or rt.is_main:
        print(msg, flush=True)


def train_model(
    spec: LossSpec,
    data: PreparedData,
    config: ExperimentConfig,
    rt: _Runtime | None = None,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model with the loss ``spec`` (seeded by ``config.seed``).

    Args:
        spec: the loss.
        data: from :func:`prepare_data`.
        config: the settings.
        rt: runtime (device, DDP rank); default: single process on ``config.device``.
        on_epoch_end: called as ``on_epoch_end(epoch, model)`` (epoch counted from 1, unwrapped model) after
            every epoch, on every process; the model is put back in training mode afterwards.

    Returns:
        The unwrapped model and a dict with ``loss_per_epoch``, ``loss_curve`` (``[step, mean loss over the
        last steps]``), ``train_time_s`` (without the callbacks), ``steps``, ``diverged`` and, for Mime, ``a``,
        ``b`` and ``threshold = b / (a + b)``.
    """
    from monai.data import DataLoader, Dataset
    from monai.utils import set_determinism

    rt = rt or _Runtime(_resolve_device(config.device))
    set_determinism(seed=config.seed)  # python, numpy, torch seeds (and cudnn.deterministic, undone below)
    model = build_model(data.in_channels, data.num_classes, config).to(rt.device)
    loss_fn = build_loss(spec, data.statistics(), config.patch_size).to(rt.device)
    info: dict[str, Any] = {}
    ab_start = _weights(loss_fn)
    net: nn.Module = model
    if rt.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device] if rt.device.type == "cuda" else None)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=rt.amp and config.amp)
    use_amp = rt.amp and config.amp

    transform = _train_transform(config.patch_size)
    transform.set_random_state(seed=config.seed + 7919 * rt.rank)
    dataset = Dataset(data.train_items, transform=transform)
    sampler = PatchSampler(
        len(data.train_items),
        config.steps_per_epoch * config.batch_size,
        num_replicas=rt.world_size,
        rank=rt.rank,
        seed=config.seed,
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=rt.device.type == "cuda",
        drop_last=True,
        generator=torch.Generator().manual_seed(config.seed + rt.rank),
        persistent_workers=config.num_workers > 0,
    )
    if rt.device.type == "cuda":  # speed over bitwise reproducibility on GPUs
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True

    t0 = time.perf_counter()
    with _track_meta(False):
        per_epoch, curve, step, diverged, callback_time = _train_epochs(
            spec, net, loss_fn, opt, scaler, use_amp, loader, sampler, config, rt, t0, model, on_epoch_end
        )
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    ab_end = _weights(loss_fn)
    if ab_end is not None and ab_start is not None:
        a, b = ab_end
        info.update(a=a.tolist(), b=b.tolist(), threshold=(b / (a + b)).tolist())
        if not (torch.equal(ab_start[0], a) and torch.equal(ab_start[1], b)):  # weights that move (adaptive)
            info.update(a_initial=ab_start[0].tolist(), b_initial=ab_start[1].tolist())
    info.update(
        loss_per_epoch=per_epoch,
        loss_curve=curve,
        train_time_s=time.perf_counter() - t0 - callback_time,
        steps=step,
        diverged=diverged,
    )
    return model, info


def _weights(loss_fn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Mime's (a, b) as float64 CPU tensors, or None for losses without them."""
    a, b = getattr(loss_fn, "a", None), getattr(loss_fn, "b", None)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.detach().double().cpu().clone(), b.detach().double().cpu().clone()
    return None


def _train_epochs(
    spec: LossSpec,
    net: nn.Module,
    loss_fn: nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    use_amp: bool,
    loader: Any,
    sampler: PatchSampler,
    config: ExperimentConfig,
    rt: _Runtime,
    t0: float,
    model: nn.Module,
    on_epoch_end: Callable[[int, nn.Module], None] | None,
) -> tuple[list[float], list[list[float]], int, bool, float]:
    per_epoch: list[float] = []
    curve: list[list[float]] = []
    window = max(1, (config.epochs * config.steps_per_epoch) // 200)
    step, diverged, callback_time = 0, False, 0.0
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        net.train()
        losses: list[torch.Tensor] = []
        bar = _progress(
            loader,
            total=len(loader),
            desc=f"{spec.text} {epoch + 1}/{config.epochs}",
            config=config,
            enabled=rt.is_main,
        )
        for batch in bar:
            x = batch["image"].to(rt.device, non_blocking=True).float()
            y = batch["label"].to(rt.device, non_blocking=True).long()
            with torch.autocast(device_type=rt.device.type, dtype=torch.float16, enabled=use_amp):
                logits = net(x)
                loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.detach().float())
            step += 1
            if step % 20 == 0 and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(torch.stack(losses[-20:]).mean()):.4g}")
        vals = torch.stack(losses).cpu().double()
        mean = vals.mean()
        if rt.distributed:
            import torch.distributed as dist

            t = mean.to(rt.device if rt.device.type == "cuda" else "cpu").float()
            dist.all_reduce(t)
            mean = t.double().cpu() / rt.world_size
        per_epoch.append(float(mean))
        arr = vals.numpy()
        base = step - len(arr)
        for s in range(0, len(arr), window):
            curve.append([base + min(s + window, len(arr)), float(arr[s : s + window].mean())])
        if not _bars_on(config):
            _log(
                f"[{spec.text}] epoch {epoch + 1}/{config.epochs} loss {float(mean):.5g} "
                f"({time.perf_counter() - t0:.0f} s)",
                rt,
            )
        if not math.isfinite(float(mean)):
            diverged = True
            _log(f"[{spec.text}] loss is not finite at epoch {epoch + 1}: training stopped", rt)
            break
        if on_epoch_end is not None:
            tc = time.perf_counter()
            with _track_meta(True):
                on_epoch_end(epoch + 1, model)
            callback_time += time.perf_counter() - tc
    return per_epoch, curve, step, diverged, callback_time


def _predict(model: nn.Module, case: Case, data: PreparedData, config: ExperimentConfig, rt: _Runtime) -> np.ndarray:
    """Label map of a whole case: sliding window over the image, or over each slice of a volume."""
    from monai.inferers import sliding_window_inference

    if data.slice_axis is None:
        x = torch.from_numpy(case.image)[None]  # (1, C, H, W)
    else:
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(case.image, data.slice_axis + 1, 0)))  # (S, C, H, W)
    preds = []
    chunk = max(1, config.sw_batch_size)
    for i in range(0, x.shape[0], chunk):
        xi = x[i : i + chunk].to(rt.device)
        with torch.autocast(device_type=rt.device.type, dtype=torch.float16, enabled=rt.amp and config.amp):
            logits = sliding_window_inference(
                xi,
                roi_size=tuple(config.patch_size),
                sw_batch_size=config.sw_batch_size,
                predictor=model,
                overlap=config.sw_overlap,
                mode="gaussian",
            )
        preds.append(torch.as_tensor(logits).argmax(1).to(torch.uint8).cpu())
    pred = torch.cat(preds).numpy()
    if data.slice_axis is None:
        return pred[0]
    return np.moveaxis(pred, 0, data.slice_axis)


def evaluate_model(
    model: nn.Module,
    data: PreparedData,
    config: ExperimentConfig,
    rt: _Runtime | None = None,
    desc: str = "eval",
) -> tuple[dict[str, Any], list[dict[str, Any]], np.ndarray | None]:
    """Per-class Dice / HD95 / volume ratio of ``model`` on the held-out cases (paper conventions).

    Returns ``(summary, per_case, example_prediction)``: the :meth:`MetricAccumulator.summary` dict plus
    ``eval_time_s``; the per-case metrics; the predicted label map of the example slice (:meth:`PreparedData.example`).
    Under DDP each process evaluates a share of the cases and the results are gathered on every process.
    """
    from monai_mime.metrics import MetricAccumulator, evaluate_case

    rt = rt or _Runtime(_resolve_device(config.device))
    model.eval()
    ex_case, ex_slice = data.example()
    mine = list(range(rt.rank, len(data.val_cases), rt.world_size))
    results: list[tuple[int, dict[str, Any]]] = []
    example: np.ndarray | None = None
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in _progress(mine, total=len(mine), desc=desc, config=config, enabled=rt.is_main):
            case = data.val_cases[i]
            pred = _predict(model, case, data, config, rt)
            gt, spacing, ev = case.label, case.spacing, pred
            ax = data.slice_axis
            if ax is not None and gt.shape[ax] == 1:  # a 2D image stored as a one-slice volume: metrics in 2D
                gt, ev = gt.squeeze(ax), pred.squeeze(ax)
                spacing = tuple(v for j, v in enumerate(spacing) if j != ax)
            m = evaluate_case(ev, gt, data.num_classes, spacing=spacing, case_id=case.case_id)
            results.append((i, m.to_dict()))
            if i == ex_case:
                example = pred if ex_slice is None else np.take(pred, ex_slice, axis=data.slice_axis)  # type: ignore[arg-type]
    if rt.distributed:
        import torch.distributed as dist

        gathered: list[Any] = [None] * rt.world_size
        dist.all_gather_object(gathered, (results, example))
        results = [r for part, _ in gathered for r in part]
        example = next((e for _, e in gathered if e is not None), None)
    results.sort(key=lambda r: r[0])
    from monai_mime.metrics import CaseMetrics

    acc = MetricAccumulator(class_names=data.class_names[1:], exclude_both_empty=config.exclude_both_empty)
    acc.extend(CaseMetrics.from_dict(r) for _, r in results)
    summary = acc.summary()
    summary["eval_time_s"] = time.perf_counter() - t0
    return summary, [r for _, r in results], example


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "loss"


def run_experiment(
    config: ExperimentConfig,
    data: PreparedData | None = None,
) -> dict[str, Any]:
    """Train and evaluate one model per loss spec of ``config`` (same seed, data and budget for all).

    Args:
        config: the settings; ``config.out`` (if not None) receives ``results.json``, ``results.md``,
            ``results.png`` and ``checkpoints/<spec>.pt``.
        data: data from :func:`prepare_data` to reuse across calls (loaded from ``config`` otherwise).

    Returns:
        The results dict written to ``results.json``: ``config``, ``data`` (name, classes, sizes, statistics),
        ``losses`` (per spec: ``per_class`` Dice/HD95 mean and std, volume ratio, ``mean``, training time,
        loss curves, Mime's a/b/threshold, ``per_case``) and ``environment``.

    Raises:
        ExperimentError: bad input (missing folder, labels disagreeing with dataset.json, unknown loss...).
    """
    config.validate()
    specs = parse_loss_specs(config.losses)
    if config.threads > 0:
        torch.set_num_threads(int(config.threads))
    rt = _setup_runtime(config)
    try:
        data = data if data is not None else prepare_data(config)
        if not data.val_cases:
            raise ExperimentError("no held-out case to evaluate")
        stats = data.statistics()
        for spec in specs:  # fail early on bad options, before any training
            build_loss(spec, stats, config.patch_size)
        out = Path(config.out) if config.out else None
        if out is not None and rt.is_main:
            try:
                (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ExperimentError(f"cannot create output folder {out}: {e.strerror}") from None
        results: dict[str, Any] = {
            "config": config.to_dict(),
            "data": {
                "name": data.name,
                "source": data.source,
                "classes": data.class_names,
                "num_train_cases": data.num_train_cases,
                "num_train_items_2d": len(data.train_items),
                "num_val_cases": len(data.val_cases),
                "slice_axis": data.slice_axis,
                "spacing_unit": data.spacing_unit,
                "train_presence_2d": [int(v) for v in np.asarray(stats.presence)],
                "train_voxels_2d": [int(v) for v in np.asarray(stats.total_counts)],
            },
            "environment": {
                "device": str(rt.device),
                "world_size": rt.world_size,
                "amp": bool(rt.amp and config.amp),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
            "losses": {},
        }
        examples: dict[str, np.ndarray | None] = {}
        for spec in specs:
            intermediate: dict[str, Any] = {}

            def at_epoch(epoch: int, m: nn.Module, spec: LossSpec = spec, store: dict = intermediate) -> None:
                if epoch in config.eval_epochs and epoch < config.epochs:
                    summ, _, _ = evaluate_model(m, data, config, rt, desc=f"{spec.text} eval @{epoch}")
                    summ["steps"] = epoch * config.steps_per_epoch
                    store[str(epoch)] = summ
                    _log(f"{spec.text} @ epoch {epoch}: mean Dice {_num(summ['mean']['dice'], 4)}", rt)

            model, info = train_model(spec, data, config, rt, on_epoch_end=at_epoch if config.eval_epochs else None)
            summary, per_case, example = evaluate_model(model, data, config, rt, desc=f"{spec.text} eval")
            examples[spec.text] = example
            entry: dict[str, Any] = {"spec": {"name": spec.name, "options": spec.options}}
            entry.update(summary)
            entry.update(info)
            entry["per_case"] = per_case
            if intermediate:
                entry["intermediate"] = intermediate  # epoch -> summary at that budget
            if out is not None and config.checkpoints and rt.is_main:
                ckpt = out / "checkpoints" / f"{_safe_name(spec.text)}.pt"
                torch.save(
                    {
                        "model": model.state_dict(),
                        "loss": spec.text,
                        "config": config.to_dict(),
                        "class_names": data.class_names,
                        "in_channels": data.in_channels,
                    },
                    ckpt,
                )
                entry["checkpoint"] = str(ckpt)
            results["losses"][spec.text] = entry
            m = summary["mean"]
            _log(
                f"{spec.text}: mean Dice {_num(m['dice'], 4)}, mean HD95 {_num(m['hd95'], 2)} {data.spacing_unit} "
                f"(train {info['train_time_s']:.0f} s, {info['steps']} steps)",
                rt,
            )
        if out is not None and rt.is_main:
            write_results(results, out)
            if config.figure:
                try:
                    plot_results(results, data, examples, out / "results.png")
                except ImportError:
                    _log("matplotlib is not installed: no figure (pip install matplotlib)", rt)
        if rt.distributed:
            import torch.distributed as dist

            dist.barrier()  # rank 0 has written everything
        return results
    finally:
        if rt.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


# ======================================================================================================
# output
# ======================================================================================================
def _fmt(mean: float | None, std: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if mean is None:
        return "–"
    if std is None:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def results_markdown(results: dict[str, Any]) -> str:
    """The paper-style tables of ``results`` (DSC %, HD95, volume ratio, time) as Markdown."""
    cfg, d = results["config"], results["data"]
    classes = d["classes"][1:]
    losses = results["losses"]
    unit = d["spacing_unit"]
    env = results["environment"]
    steps = cfg["epochs"] * cfg["steps_per_epoch"]
    lines = [
        f"# Loss comparison on {d['name']}",
        "",
        f"2D patches {cfg['patch_size'][0]}×{cfg['patch_size'][1]}, MONAI UNet {tuple(cfg['channels'])}, "
        f"Adam lr {cfg['lr']:g}, {steps} steps × {cfg['batch_size']} patches"
        + (f" × {env['world_size']} processes" if env["world_size"] > 1 else "")
        + f", seed {cfg['seed']}, device {env['device']}. Train: {d['num_train_cases']} cases "
        f"({d['num_train_items_2d']} 2D images); held-out: {d['num_val_cases']} cases, whole "
        f"{'images' if d['slice_axis'] is None else 'volumes (2D slice by slice)'}. "
        f"Mean ± std over held-out cases; a class missed (or predicted where absent) counts DSC 0 and HD95 = "
        f"image diagonal, a class absent from both counts DSC 100 and HD95 0"
        + (" (here excluded instead)" if cfg.get("exclude_both_empty") else "")
        + ".",
        "",
    ]

    def best(key: str, cls: str | None, lower: bool) -> float | None:
        vals = []
        for e in losses.values():
            v = e["mean"][key] if cls is None else e["per_class"][cls][f"{key}_mean"]
            if v is not None:
                vals.append(v)
        if not vals:
            return None
        return min(vals) if lower else max(vals)

    for key, title, scale, lower, digits in (
        ("dice", "DSC (%)", 100.0, False, 1),
        ("hd95", f"HD95 ({unit})", 1.0, True, 2),
    ):
        lines += [
            f"## {title}",
            "",
            "| Loss | " + " | ".join(classes) + " | mean |",
            "|---|" + "---:|" * (len(classes) + 1),
        ]
        for name, e in losses.items():
            cells = []
            for c in classes:
                pc = e["per_class"][c]
                s = _fmt(pc[f"{key}_mean"], pc[f"{key}_std"], scale, digits)
                if pc[f"{key}_mean"] is not None and pc[f"{key}_mean"] == best(key, c, lower) and len(losses) > 1:
                    s = f"**{s}**"
                cells.append(s)
            mv = e["mean"][key]
            ms = _fmt(mv, None, scale, digits)
            if mv is not None and mv == best(key, None, lower) and len(losses) > 1:
                ms = f"**{ms}**"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {ms} |")
        lines.append("")
    lines += [
        "## Predicted ÷ true voxels (held-out set) and training time",
        "",
        "| Loss | " + " | ".join(classes) + " | train (s) | steps |",
        "|---|" + "---:|" * (len(classes) + 2),
    ]
    for name, e in losses.items():
        ratios = [f"{e['per_class'][c]['volume_ratio']:.2f}" for c in classes]
        flag = " (diverged)" if e.get("diverged") else ""
        lines.append(f"| {name}{flag} | " + " | ".join(ratios) + f" | {e['train_time_s']:.0f} | {e['steps']} |")
    mime = {n: e for n, e in losses.items() if "a" in e}
    if mime:
        lines += [
            "",
            "## Mime weights (a, b, threshold b/(a+b)), classes "
            + ", ".join(d["classes"][-len(next(iter(mime.values()))["a"]) :]),
            "",
        ]
        for n, e in mime.items():
            a = ", ".join(f"{v:.3g}" for v in e["a"])
            b = ", ".join(f"{v:.3g}" for v in e["b"])
            t = ", ".join(f"{v:.3f}" for v in e["threshold"])
            lines.append(f"- `{n}`: a = [{a}], b = [{b}], threshold = [{t}]")
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else (None if math.isnan(f) else ("inf" if f > 0 else "-inf"))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def write_results(results: dict[str, Any], out: str | os.PathLike[str]) -> None:
    """Write ``results.json`` (non-finite numbers as ``null``/``"inf"``) and ``results.md`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(_jsonable(results), indent=1) + "\n")
    tmp.replace(out / "results.json")
    (out / "results.md").write_text(results_markdown(results))


def plot_results(
    results: dict[str, Any],
    data: PreparedData,
    examples: dict[str, np.ndarray | None],
    path: str | os.PathLike[str],
) -> None:
    """The figure: per-class Dice and HD95 bars per loss, training-loss curves, and one held-out slice with
    the ground truth and each loss's prediction overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    losses = results["losses"]
    names = list(losses)
    classes = results["data"]["classes"][1:]
    n_cols = max(3, len(names) + 1)
    fig = plt.figure(figsize=(3.2 * n_cols, 7.0), constrained_layout=True)
    gs = fig.add_gridspec(2, n_cols)
    width = 0.8 / max(1, len(names))
    xs = np.arange(len(classes))
    colors = plt.get_cmap("tab10")
    thirds = [gs[0, : n_cols // 3], gs[0, n_cols // 3 : 2 * n_cols // 3], gs[0, 2 * n_cols // 3 :]]
    for slot, (key, ylabel) in zip(
        thirds[:2], (("dice", "Dice"), ("hd95", f"HD95 ({results['data']['spacing_unit']})")), strict=True
    ):
        ax = fig.add_subplot(slot)
        for j, n in enumerate(names):
            pc = losses[n]["per_class"]
            m = np.array([pc[c][f"{key}_mean"] or 0.0 for c in classes])
            s = np.array([pc[c][f"{key}_std"] or 0.0 for c in classes])
            lo = np.minimum(s, m)  # std bars clipped to the metric's range
            hi = np.minimum(s, 1.0 - m) if key == "dice" else s
            ax.bar(
                xs + (j - (len(names) - 1) / 2) * width,
                m,
                width,
                yerr=np.stack([lo, hi]),
                capsize=2,
                label=n,
                color=colors(j % 10),
            )
        ax.set_xticks(xs, classes)
        ax.set_ylabel(ylabel)
        if key == "dice":
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=7, loc="lower left")
        ax.set_title(f"per-class {ylabel.split(' ')[0]} (held-out)")
    ax = fig.add_subplot(thirds[2])
    for j, n in enumerate(names):
        curve = np.asarray(losses[n]["loss_curve"], dtype=np.float64)
        if curve.size == 0:
            continue
        v = curve[:, 1]
        lo, hi = np.nanmin(v), np.nanmax(v)
        ax.plot(curve[:, 0], (v - lo) / (hi - lo) if hi > lo else v * 0, label=n, color=colors(j % 10), lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (min–max scaled per loss)")
    ax.set_title("training loss")

    ci, si = data.example()
    case = data.val_cases[ci]
    img = case.image[0] if si is None else np.take(case.image[0], si, axis=data.slice_axis)  # type: ignore[arg-type]
    gt = case.label if si is None else np.take(case.label, si, axis=data.slice_axis)  # type: ignore[arg-type]
    k = data.num_classes
    cmap = ListedColormap([(0, 0, 0, 0)] + [(*colors((i + 2) % 10)[:3], 0.55) for i in range(k - 1)])
    panels = [("ground truth", gt)] + [(n, examples.get(n)) for n in names]
    for j, (title, lab) in enumerate(panels):
        ax = fig.add_subplot(gs[1, j])
        ax.imshow(img, cmap="gray")
        if lab is not None:
            ax.imshow(lab, cmap=cmap, vmin=0, vmax=k - 1, interpolation="nearest")
        ax.set_title(title if j == 0 else f"{title}", fontsize=8)
        ax.axis("off")
    fig.suptitle(
        f"{results['data']['name']}: held-out case {case.case_id}" + ("" if si is None else f", slice {si}"),
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
