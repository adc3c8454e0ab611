"""The built-in rare-class dataset (monai_mime.synthetic)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from monai_mime.synthetic import CLASS_NAMES, make_case, make_dataset, write_nnunet_raw


def test_deterministic_and_index_based():
    x1, y1 = make_dataset(5, seed=3)
    x2, y2 = make_dataset(2, seed=3, start=3)
    assert np.array_equal(x1[3], x2[0]) and np.array_equal(y1[4], y2[1])
    x3, _ = make_dataset(1, seed=4)
    assert not np.array_equal(x1[0], x3[0])
    img, lab = make_case(seed=3, index=1)
    assert np.array_equal(img, x1[1]) and np.array_equal(lab, y1[1])


def test_shapes_dtypes_and_classes():
    xs, ys = make_dataset(40, seed=0, spatial_size=(64, 80))
    assert all(x.shape == (64, 80) and x.dtype == np.float32 for x in xs)
    assert all(y.shape == (64, 80) and y.dtype == np.uint8 for y in ys)
    assert {int(v) for y in ys for v in np.unique(y)} <= set(range(len(CLASS_NAMES)))
    assert all((y == 1).any() for y in ys)  # the blob is always there
    assert all(np.isfinite(x).all() for x in xs)


def test_rare_class_is_rare_in_images_and_patches():
    _, ys = make_dataset(200, seed=0)
    presence = np.mean([(y == 3).any() for y in ys])
    assert 0.15 < presence < 0.35
    fractions = np.bincount(np.concatenate([y.ravel() for y in ys]), minlength=4) / (200 * 128 * 128)
    assert fractions[1] > fractions[2] > fractions[3] > 0  # large, medium, rare
    rng = np.random.default_rng(0)
    absent = []
    for _ in range(2000):
        y = ys[rng.integers(200)]
        r, c = rng.integers(0, 65, size=2)
        absent.append(not (y[r : r + 64, c : c + 64] == 3).any())
    assert np.mean(absent) > 0.85  # most 64^2 patches miss the rare class


def test_not_trivial_noise():
    x, y = make_case(seed=0, index=0)
    bg = x[y == 0]
    assert bg.std() > 0.25  # noisy background
    # thresholding the intensity alone does not recover the blob
    blob = y == 1
    thr = x > 0.3
    dice = 2 * (thr & blob).sum() / (thr.sum() + blob.sum())
    assert dice < 0.9


def test_probabilities_and_3d():
    _, ys = make_dataset(10, seed=1, rare_probability=1.0, ring_probability=0.0)
    assert all((y == 3).any() and not (y == 2).any() for y in ys)
    _, ys = make_dataset(10, seed=1, rare_probability=0.0)
    assert not any((y == 3).any() for y in ys)
    x, y = make_case(seed=0, index=0, spatial_size=(32, 32, 24), rare_probability=1.0)
    assert x.shape == y.shape == (32, 32, 24) and {0, 1, 3} <= set(np.unique(y).tolist())


def test_size_jitter():
    xs, ys = make_dataset(6, seed=0, spatial_size=(64, 64), size_jitter=8)
    shapes = {x.shape for x in xs}
    assert len(shapes) > 1 and all(abs(s - 64) <= 8 for sh in shapes for s in sh)
    assert all(x.shape == y.shape for x, y in zip(xs, ys, strict=True))


@pytest.mark.parametrize(
    "kwargs",
    [{"spatial_size": (8, 8)}, {"spatial_size": (32,)}, {"rare_probability": 1.5}],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_case(**kwargs)


def test_write_nnunet_raw(tmp_path):
    folder = write_nnunet_raw(
        tmp_path / "Dataset901_Synth", num_cases=5, seed=2, spatial_size=(48, 40), spacing=(0.5, 0.7)
    )
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "blob": 1, "ring": 2, "rare": 3}
    assert meta["numTraining"] == 5 and meta["file_ending"] == ".nii.gz" and meta["channel_names"] == {"0": "synthetic"}
    split = json.loads((folder / "splits.json").read_text())
    assert len(split["train"]) == 4 and split["val"] == ["synth_004"]
    img = nib.Nifti1Image.from_filename(folder / "imagesTr" / "synth_000_0000.nii.gz")
    lab = nib.Nifti1Image.from_filename(folder / "labelsTr" / "synth_000.nii.gz")
    assert img.shape == lab.shape == (48, 40, 1)
    assert np.allclose(img.header.get_zooms(), (0.5, 0.7, 1.0))
    x, y = make_case(seed=2, index=0, spatial_size=(48, 40))
    assert np.array_equal(np.asarray(lab.dataobj)[..., 0], y)
    assert np.allclose(np.asarray(img.dataobj)[..., 0], x)
    assert lab.get_data_dtype() == np.uint8
    # 3D volumes
    f3 = write_nnunet_raw(tmp_path / "Dataset902_Synth3D", num_cases=2, spatial_size=(32, 32, 16), num_val=1)
    assert nib.Nifti1Image.from_filename(f3 / "labelsTr" / "synth_001.nii.gz").shape == (32, 32, 16)
    with pytest.raises(ValueError):
        write_nnunet_raw(tmp_path / "x", num_cases=2, num_val=3)
