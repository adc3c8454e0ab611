"""A tiny hand-written nnU-Net preprocessed dataset for the trainer tests, and trainers built on it.

The dataset is written with nnU-Net's own ``nnUNetDatasetNumpy.save_case`` next to a minimal plans file with a small
2D PlainConvUNet (:mod:`_nnunet_plans`), so that ``nnUNetTrainer.__init__``/``initialize`` run for real. Test modules
take the fixture with ``nnunet_env = _nnunet_tiny_dataset.nnunet_env``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _nnunet_plans import NETWORK_CLASS, REQUIRES_IMPORT, tiny_unet_arch_kwargs
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from monai_mime.stats import ClassStatistics
from nnunet_trainers import trainers as tr
from nnunet_trainers.losses import NnUNetLossAdapter

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_FOLDER = REPO / "examples" / "nnunet" / "my_trainers"
DATASET = "Dataset991_MimeTiny"
SHAPE = (1, 40, 36)  # (z, y, x): 2D images stored as one-slice volumes, as nnU-Net preprocesses 2D data
NUM_CASES = 8
RARE_CASES = (1, 4, 6)  # the only cases containing label 3

LABELS = {"background": 0, "left": 1, "right": 2, "rare": 3}
LABELS_IGNORE = {**LABELS, "ignore": 4}
LABELS_REGIONS = {"background": 0, "any": [1, 2, 3], "right_or_rare": [2, 3], "rare": 3}


def plans() -> dict[str, Any]:
    """The plans of the tiny dataset: one 2d configuration, 32 x 32 patches, the tiny PlainConvUNet."""
    return {
        "dataset_name": DATASET,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": list(SHAPE),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 1.0,
                "mean": 0.5,
                "median": 0.5,
                "min": 0.0,
                "percentile_00_5": 0.0,
                "percentile_99_5": 1.0,
                "std": 0.2,
            }
        },
        "configurations": {
            "2d": {
                "data_identifier": "nnUNetPlans_2d",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [32, 32],
                "median_image_size_in_voxels": [40.0, 36.0],
                "spacing": [1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "architecture": {
                    "network_class_name": NETWORK_CLASS,
                    "arch_kwargs": tiny_unet_arch_kwargs(),
                    "_kw_requires_import": REQUIRES_IMPORT,
                },
                "batch_dice": True,
            }
        },
    }


def segmentation(case: int, ignore: bool) -> np.ndarray:
    """(1, z, y, x) int8 label map: two blobs in every case, a small 'rare' blob in RARE_CASES, -1 in a corner
    (nnU-Net's "outside the nonzero crop", background for training), the ignore label on a stripe if asked."""
    seg = np.zeros((1, *SHAPE), dtype=np.int8)
    seg[0, 0, 5 : 15 + case, 4:14] = 1
    seg[0, 0, 20:30, 18 : 26 + case % 3] = 2
    if case in RARE_CASES:
        seg[0, 0, 32:35, 30:33] = 3
    seg[0, 0, 0, 0:2] = -1
    if ignore:
        seg[0, 0, 36:40, :] = 4
    return seg


@pytest.fixture()
def nnunet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Factory: write the tiny preprocessed dataset with a given label dict; set nnU-Net's paths."""
    pre, res = tmp_path / "nnUNet_preprocessed", tmp_path / "nnUNet_results"
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    monkeypatch.setenv("nnUNet_results", str(res))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nnUNet_raw"))
    monkeypatch.setenv("nnUNet_compile", "false")
    monkeypatch.setenv("MONAI_MIME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(tr.ENV_WEIGHT_MODE, raising=False)
    monkeypatch.delenv(tr.ENV_WEIGHT_KWARGS, raising=False)

    def make(labels: dict[str, Any] = LABELS, splits: list[dict[str, list[str]]] | None = None) -> Path:
        folder = pre / DATASET
        data_folder = folder / "nnUNetPlans_2d"
        data_folder.mkdir(parents=True, exist_ok=True)
        dataset_json = {
            "channel_names": {"0": "MRI"},
            "labels": labels,
            "numTraining": NUM_CASES,
            "file_ending": ".nii.gz",
        }
        if any(isinstance(v, list) for v in labels.values()):
            dataset_json["regions_class_order"] = [1, 2, 3]
        (folder / "dataset.json").write_text(json.dumps(dataset_json))
        (folder / "nnUNetPlans.json").write_text(json.dumps(plans()))
        rng = np.random.default_rng(0)
        for case in range(NUM_CASES):
            seg = segmentation(case, ignore="ignore" in labels)
            data = rng.standard_normal(seg.shape).astype(np.float32)
            nnUNetDatasetNumpy.save_case(data, seg, {"spacing": [1.0, 1.0, 1.0]}, str(data_folder / f"case_{case:03d}"))
        if splits is not None:
            (folder / "splits_final.json").write_text(json.dumps(splits))
        return folder

    return make


def make_trainer(cls: type, fold: int | str = 0) -> nnUNetTrainer:
    """A trainer of class ``cls`` on the tiny dataset's 2d configuration, on the CPU (not initialised)."""
    folder = Path(os.environ["nnUNet_preprocessed"]) / DATASET
    plans_dict = json.loads((folder / "nnUNetPlans.json").read_text())
    plans_dict["continue_training"] = False
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return cls(plans=plans_dict, configuration="2d", fold=fold, dataset_json=dataset_json, device=torch.device("cpu"))


def expected_stats(cases: list[str], ignore: bool = False) -> ClassStatistics:
    """The statistics of ``cases`` counted directly from :func:`segmentation` (the reference for the trainers')."""
    labels = []
    for c in cases:
        seg = segmentation(int(c.split("_")[1]), ignore)
        labels.append(np.where(seg < 0, 0, seg))
    return ClassStatistics.from_labels(labels, num_classes=4, ignore_index=4 if ignore else None, case_ids=cases)


def fold_training_cases(fold: int = 0) -> list[str]:
    """The training cases of ``fold`` in the dataset's ``splits_final.json``."""
    splits = json.loads((Path(os.environ["nnUNet_preprocessed"]) / DATASET / "splits_final.json").read_text())
    return sorted(splits[fold]["train"])


def inner_adapter(loss: torch.nn.Module) -> NnUNetLossAdapter:
    """The loss adapter inside nnU-Net's deep-supervision wrapper."""
    assert isinstance(loss, DeepSupervisionWrapper)
    assert isinstance(loss.loss, NnUNetLossAdapter)
    return loss.loss
