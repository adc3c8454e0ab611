"""An nnU-Net raw dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``, optional ``splits.json``) read
into :class:`PreparedData`: checked, split into train/val, volumes cut into 2D training slices (or kept whole
for 3D patches)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .cases import Case, PreparedData, normalise
from .config import ExperimentConfig, ExperimentError
from .runtime import progress

__all__ = ["nnunet_data"]


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


def nnunet_data(config: ExperimentConfig) -> PreparedData:
    """Load and check ``config.data``: training items are 2D slices (``spatial_dims=2``; 2D images as they are) or
    whole volumes (``spatial_dims=3``); held-out cases are whole images/volumes."""
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
        return Case(cid, normalise(img_np), lab_np.astype(np.uint8), spacing)

    workers = max(1, min(8, config.num_workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        it = pool.map(load, train_ids + val_ids)
        cases = list(progress(it, total=len(train_ids) + len(val_ids), desc="loading", config=config))
    train_cases, val_cases = cases[: len(train_ids)], cases[len(train_ids) :]
    for c in cases:
        if c.label.ndim != train_cases[0].label.ndim:
            raise ExperimentError(
                f"case {c.case_id!r} has {c.label.ndim} axes, the first training case has {train_cases[0].label.ndim}"
            )
    axis = _slice_axis(train_cases[0].label.shape, train_cases[0].spacing)
    if config.spatial_dims == 3:
        shape = train_cases[0].label.shape
        if len(shape) != 3 or min(shape) == 1:
            raise ExperimentError(f"--spatial-dims 3 needs 3D volumes; case {train_cases[0].case_id!r} is {shape}")
        train_items = [{"image": c.image, "label": c.label[None]} for c in train_cases]
    else:
        train_items = _slices(train_cases, axis)
    return PreparedData(
        name=str(meta.get("name") or folder.name),
        class_names=names,
        in_channels=n_ch,
        train_items=train_items,
        val_cases=val_cases,
        slice_axis=None if config.spatial_dims == 3 else axis,
        num_train_cases=len(train_cases),
        spacing_unit="mm",
        source=str(folder),
        view_axis=axis,
    )


def _slices(cases: list[Case], axis: int | None) -> list[dict[str, np.ndarray]]:
    """2D training items: the cases themselves (2D images), or their slices across ``axis`` (volumes)."""
    if axis is None:
        return [{"image": c.image, "label": c.label[None]} for c in cases]
    items = []
    for c in cases:
        img = np.moveaxis(c.image, axis + 1, 1)
        lab = np.moveaxis(c.label, axis, 0)
        for s in range(lab.shape[0]):
            items.append({"image": np.ascontiguousarray(img[:, s]), "label": np.ascontiguousarray(lab[s][None])})
    return items
