"""A small built-in multi-class dataset with a *rare* class: the situation Mime is about.

Every image holds, on a noisy background with a smooth bias field and a few decoy discs:

===== ========= ======================================================= =====================
label name      shape                                                   present in
===== ========= ======================================================= =====================
1     ``blob``  a large ellipse (ellipsoid in 3D), ~8 % of the image     every image
2     ``ring``  a medium annulus (shell in 3D), ~1.5 % of the image      ``ring_probability``
3     ``rare``  a small bright disc (ball in 3D), ~0.25 % of an image    ``rare_probability``
===== ========= ======================================================= =====================

With the defaults (128² images, the rare class in 25 % of them) a random 64² patch misses the rare class
more than nine times out of ten, so patch-based training sees mostly *empty* patches for it: the
setting where every Dice variant divides by little more than its smoothing term (see
``docs/equations.md``). The decoys are discs as dark as the blob and as small as the rare class, so the
rare class must be told from them by its brightness under noise; the ring must be told from the rare
disc by its shape. Objects have soft edges (a sigmoid of the signed distance), so the task is not
trivial but a small U-Net learns it within minutes on a CPU.

Everything is deterministic: case ``i`` of seed ``s`` is drawn from ``numpy.random.default_rng([s, i])``,
whatever the number of cases asked for, so a held-out set is simply further indices of the same seed.

Example:
    >>> images, labels = make_dataset(4, seed=0)
    >>> images[0].shape, images[0].dtype, labels[0].dtype
    ((128, 128), dtype('float32'), dtype('uint8'))
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CLASS_NAMES", "make_case", "make_dataset", "write_nnunet_raw"]

#: Label names, index = label value.
CLASS_NAMES: tuple[str, ...] = ("background", "blob", "ring", "rare")

# mean intensity of each object (before bias field and noise); decoys look like small blobs
_INTENSITY = {"blob": 0.55, "ring": 0.8, "rare": 1.1, "decoy": 0.55}


def _signed_radius(coords: list[np.ndarray], center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Approximate signed distance (in voxels) to the surface of an axis-aligned ellipsoid: > 0 inside."""
    q = np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip(coords, center, radii, strict=True)))
    return (1.0 - q) * float(np.min(radii))


def _soft(sd: np.ndarray, width: float = 0.8) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(sd / width, -30, 30)))


def _place(
    rng: np.random.Generator,
    shape: np.ndarray,
    radii: np.ndarray,
    taken: list[tuple[np.ndarray, float]],
    tries: int = 50,
) -> np.ndarray:
    """A centre keeping an object of semi-axes ``radii`` inside the image and off the objects in ``taken``."""
    lo = np.minimum(radii + 1.0, shape / 2.0)
    hi = np.maximum(shape - radii - 1.0, lo)
    extent = float(np.max(radii))
    c = rng.uniform(lo, hi)
    for _ in range(tries):
        if all(np.linalg.norm(c - tc) > extent + te + 2.0 for tc, te in taken):
            break
        c = rng.uniform(lo, hi)
    return c


def make_case(
    seed: int = 0,
    index: int = 0,
    spatial_size: Sequence[int] = (128, 128),
    rare_probability: float = 0.25,
    ring_probability: float = 0.9,
    noise: float = 0.35,
    num_decoys: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Case ``index`` of the synthetic dataset with seed ``seed``.

    Object sizes are fractions of the image size along each axis (a volume with few slices gets flat
    ellipsoids), with at least 2 voxels of radius for the small discs.

    Args:
        seed: dataset seed.
        index: case number; the case depends only on ``(seed, index)`` and the other arguments.
        spatial_size: image shape, 2 or 3 axes (2D images or 3D volumes), at least 16 voxels per axis
            (4 along a third axis).
        rare_probability: probability that the image contains the rare class (label 3).
        ring_probability: probability that the image contains the ring (label 2).
        noise: standard deviation of the additive Gaussian noise (object contrast is 0.55–1.1).
        num_decoys: number of unlabeled small discs with the blob's intensity.

    Returns:
        ``(image, label)``: float32 image and uint8 label map, both of shape ``spatial_size``.
    """
    size = np.asarray(spatial_size, dtype=np.int64)
    if size.ndim != 1 or len(size) not in (2, 3) or np.any(size[:2] < 16) or np.any(size < 4):
        raise ValueError(
            f"spatial_size must have 2 or 3 axes of at least 16 voxels (4 along a third), got {tuple(spatial_size)}"
        )
    for name, p in (("rare_probability", rare_probability), ("ring_probability", ring_probability)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    rng = np.random.default_rng([int(seed), int(index)])
    shape = size.astype(np.float64)
    ndim = len(size)
    coords = list(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in size], indexing="ij"))
    label = np.zeros(tuple(size), dtype=np.uint8)
    clean = np.zeros(tuple(size), dtype=np.float64)
    taken: list[tuple[np.ndarray, float]] = []

    def small_disc() -> tuple[np.ndarray, np.ndarray]:
        radii = np.maximum(rng.uniform(0.022, 0.04) * shape, 2.0)
        return _place(rng, shape, radii, taken), radii

    # large blob: an ellipse with random semi-axes, 0.12-0.2 of the image size per axis
    radii = rng.uniform(0.12, 0.2, size=ndim) * shape
    c = _place(rng, shape, radii, taken)
    taken.append((c, float(radii.max())))
    sd = _signed_radius(coords, c, radii)
    clean += _INTENSITY["blob"] * _soft(sd)
    label[sd > 0] = 1

    # medium ring (annulus / shell), inner radius 45-60 % of the outer one
    if rng.random() < ring_probability:
        r_out = np.maximum(rng.uniform(0.07, 0.1) * shape, 3.0)
        ratio = rng.uniform(0.45, 0.6)
        c = _place(rng, shape, r_out, taken)
        taken.append((c, float(r_out.max())))
        q = np.sqrt(sum(((x - mu) / r) ** 2 for x, mu, r in zip(coords, c, r_out, strict=True)))
        sd = np.minimum(1.0 - q, q - ratio) * float(r_out.min())
        clean += _INTENSITY["ring"] * _soft(sd)
        label[sd > 0] = 2

    # small rare disc, bright
    has_rare = rng.random() < rare_probability
    c_rare, r_rare = small_disc()
    if has_rare:
        taken.append((c_rare, float(r_rare.max())))
        sd = _signed_radius(coords, c_rare, r_rare)
        clean += _INTENSITY["rare"] * _soft(sd)
        label[sd > 0] = 3

    # decoys: small discs as dark as the blob, unlabeled (background)
    for _ in range(num_decoys):
        c, r = small_disc()
        taken.append((c, float(r.max())))
        clean += _INTENSITY["decoy"] * _soft(_signed_radius(coords, c, r))

    # smooth multiplicative bias field and additive noise
    grad = rng.uniform(-0.25, 0.25, size=ndim)
    bias = 1.0 + sum(g * (x / n - 0.5) for g, x, n in zip(grad, coords, shape, strict=True))
    image = clean * bias + rng.normal(0.0, noise, size=tuple(size)) + rng.uniform(-0.1, 0.1)
    return image.astype(np.float32), label


def make_dataset(
    num_cases: int,
    seed: int = 0,
    start: int = 0,
    spatial_size: Sequence[int] = (128, 128),
    size_jitter: int = 0,
    **case_kwargs: Any,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Cases ``start .. start + num_cases - 1`` of seed ``seed`` (see :func:`make_case`).

    Args:
        num_cases: number of cases.
        seed: dataset seed.
        start: index of the first case (use disjoint ranges of one seed for train and held-out sets).
        spatial_size: image shape (2 or 3 axes).
        size_jitter: when > 0 each case's shape is ``spatial_size`` plus a per-case integer offset in
            ``[-size_jitter, size_jitter]`` per axis (images of different sizes, as in nnU-Net datasets).
        **case_kwargs: ``rare_probability``, ``ring_probability``, ``noise``, ``num_decoys``.

    Returns:
        ``(images, labels)``: two lists of ``num_cases`` arrays (float32 images, uint8 label maps).
    """
    if num_cases < 0:
        raise ValueError(f"num_cases must be >= 0, got {num_cases}")
    images, labels = [], []
    for i in range(start, start + num_cases):
        size = tuple(int(s) for s in spatial_size)
        if size_jitter > 0:
            off = np.random.default_rng([int(seed), int(i), 1]).integers(-size_jitter, size_jitter + 1, len(size))
            size = tuple(int(s + o) for s, o in zip(size, off, strict=True))
        img, lab = make_case(seed=seed, index=i, spatial_size=size, **case_kwargs)
        images.append(img)
        labels.append(lab)
    return images, labels


def write_nnunet_raw(
    folder: str | os.PathLike[str],
    num_cases: int = 20,
    seed: int = 0,
    spatial_size: Sequence[int] = (128, 128),
    spacing: Sequence[float] | None = None,
    num_val: int | None = None,
    size_jitter: int = 0,
    case_prefix: str = "synth",
    **case_kwargs: Any,
) -> Path:
    """Write the synthetic dataset as an nnU-Net v2 raw dataset folder.

    Layout (``folder`` is the dataset folder itself, e.g. ``$nnUNet_raw/Dataset901_MimeSynthetic``)::

        dataset.json            channel "0" (z-score normalised by nnU-Net), labels from CLASS_NAMES
        splits.json             {"train": [...], "val": [...]}: the last num_val cases are "val"
        imagesTr/<case>_0000.nii.gz   float32 image
        labelsTr/<case>.nii.gz        uint8 label map

    2D images are stored as NIfTI volumes with one slice, shape ``(H, W, 1)``; 3D ones as ``(H, W, D)``.
    The affine is ``diag(*spacing, 1)``.

    Args:
        folder: dataset folder to create (parents included); existing files are overwritten.
        num_cases: number of cases (train + val).
        seed: dataset seed (:func:`make_case`).
        spatial_size: image shape, 2 or 3 axes.
        spacing: voxel size per axis (default 1 mm; for 2D a third value is the slice thickness).
        num_val: cases in the "val" list of ``splits.json`` (default: a fifth, at least one when
            ``num_cases >= 2``).
        size_jitter: per-case shape variation (:func:`make_dataset`).
        case_prefix: case identifiers are ``f"{case_prefix}_{i:03d}"``.
        **case_kwargs: passed to :func:`make_case`.

    Returns:
        The dataset folder as a :class:`pathlib.Path`.
    """
    import nibabel as nib

    folder = Path(folder)
    ndim = len(spatial_size)
    sp = [1.0] * 3 if spacing is None else [float(s) for s in spacing]
    if len(sp) == ndim == 2:
        sp.append(1.0)
    if len(sp) != 3:
        raise ValueError(f"spacing must have {ndim} (or 3) values, got {spacing!r}")
    if num_val is None:
        num_val = max(1, num_cases // 5) if num_cases >= 2 else 0
    if not 0 <= num_val <= num_cases:
        raise ValueError(f"num_val must be in [0, num_cases], got {num_val}")
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([*sp, 1.0])
    names = []
    images, labels = make_dataset(
        num_cases, seed=seed, spatial_size=spatial_size, size_jitter=size_jitter, **case_kwargs
    )
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        name = f"{case_prefix}_{i:03d}"
        names.append(name)
        if ndim == 2:
            img, lab = img[..., None], lab[..., None]
        nib.save(nib.Nifti1Image(img.astype(np.float32), affine), str(folder / "imagesTr" / f"{name}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), str(folder / "labelsTr" / f"{name}.nii.gz"))
    dataset_json = {
        "name": folder.name,
        "description": f"monai_mime.synthetic rare-class dataset (seed {seed}, {ndim}D, size {tuple(spatial_size)})",
        "channel_names": {"0": "synthetic"},
        "labels": {name: i for i, name in enumerate(CLASS_NAMES)},
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")
    split = {"train": names[: num_cases - num_val], "val": names[num_cases - num_val :]}
    (folder / "splits.json").write_text(json.dumps(split, indent=2) + "\n")
    return folder
