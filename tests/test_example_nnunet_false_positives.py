"""examples/nnunet/false_positives.py: false positives near the foreground, far from it, and on slices without it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "nnunet" / "false_positives.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nnunet_false_positives", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fp = _load()


def _volumes() -> tuple[np.ndarray, np.ndarray]:
    """Two 20 x 20 slices: slice 0 holds class 1 (a 4 x 4 square) and class 2; slice 1 holds class 2 only."""
    reference = np.zeros((20, 20, 2), dtype=np.uint8)
    reference[8:12, 8:12, 0] = 1
    reference[2:4, 2:4, :] = 2
    prediction = reference.copy()
    prediction[12, 8:10, 0] = 1  # 2 voxels next to the square: near
    prediction[17:19, 17:19, 0] = 1  # 4 voxels 7+ px from any foreground: far
    prediction[10, 10, 1] = 1  # 1 voxel of class 1 on the slice without it
    prediction[2, 2, 0] = 1  # 1 voxel of class 2 labelled 1: inside the foreground, near; and class 2 misses it
    return prediction, reference


def test_counts_near_far_and_empty_slices() -> None:
    prediction, reference = _volumes()
    counts = fp.count_false_positives(prediction, reference, classes=3, near=3.0)
    assert counts.near.tolist() == [0, 3, 0] and counts.far.tolist() == [0, 4, 0]
    assert counts.on_empty.tolist() == [0, 1, 0]
    assert counts.empty_slices.tolist() == [0, 1, 0] and counts.empty_slices_hit.tolist() == [0, 1, 0]
    # a wider "near" moves the blob over
    wide = fp.count_false_positives(prediction, reference, classes=3, near=10.0)
    assert wide.near.tolist() == [0, 7, 0] and wide.far.tolist() == [0, 0, 0]


def test_run_counts_reads_nifti_predictions_and_references(tmp_path: Path) -> None:
    prediction, reference = _volumes()
    (tmp_path / "validation").mkdir()
    (tmp_path / "gt").mkdir()
    for name in ("case_a", "case_b"):
        nib.save(nib.Nifti1Image(prediction, np.eye(4)), tmp_path / "validation" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(reference, np.eye(4)), tmp_path / "gt" / f"{name}.nii.gz")
    total = fp.run_counts(tmp_path / "validation", tmp_path / "gt", classes=3, near=3.0)
    assert total.near.tolist() == [0, 6, 0] and total.far.tolist() == [0, 8, 0] and total.on_empty.tolist() == [0, 2, 0]
    with pytest.raises(SystemExit, match="no predictions"):
        fp.run_counts(tmp_path / "gt" / "missing", tmp_path / "gt", classes=3, near=3.0)
