"""ClassStatistics constructors on real files: NIfTI folders, MONAI data dicts, nnU-Net raw and preprocessed datasets.

Counts are checked against numpy on the arrays the test itself wrote (never through the code under test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_mime.stats import ClassStatistics
from monai_mime.stats.nnunet_folds import nnunet_label_info


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_MIME_CACHE_DIR", str(tmp_path / "cache"))


def ref(arr, k, ignore=None):
    arr = np.asarray(arr)
    return np.array([(arr == c).sum() for c in range(k)]), int((arr == ignore).sum()) if ignore is not None else 0


def save_nifti(path, arr):
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return arr


def label_folder(folder, n=5, k=4, seed=0, ignore=None):
    """n NIfTI label images of various shapes, dtypes and endings; returns {case: array}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    dtypes = [np.uint8, np.int16, np.float32, np.uint8, np.int32]
    cases = {}
    for i in range(n):
        arr = rng.integers(0, k, rng.integers(3, 12, 3)).astype(dtypes[i % len(dtypes)])
        if ignore is not None:
            arr.flat[::7] = ignore
        ending = ".nii" if i % 2 else ".nii.gz"
        cases[f"case_{i:03d}"] = save_nifti(folder / f"case_{i:03d}{ending}", arr)
    (folder / "README.txt").write_text("not a label image")
    return cases


# ------------------------------------------------------------------------------------------------ from_folder
@pytest.mark.parametrize("workers", [1, 2])
def test_from_folder_counts_exactly(tmp_path, workers):
    cases = label_folder(tmp_path / "labels", n=6, ignore=255)
    s = ClassStatistics.from_folder(tmp_path / "labels", 4, 255, num_workers=workers, progress=False)
    assert s.case_ids == sorted(cases)
    for i, c in enumerate(s.case_ids):
        counts, ignored = ref(cases[c], 4, 255)
        np.testing.assert_array_equal(s.counts[i], counts)
        assert s.ignored[i] == ignored and s.voxels[i] == cases[c].size - ignored
    assert s.source == f"folder:{tmp_path / 'labels'}" and str(s.fingerprint).startswith("sha256:")


def test_from_folder_infers_num_classes_and_reads_npy_and_nrrd(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    a = np.array([[0, 1], [5, 5]], dtype=np.uint8)
    np.save(folder / "a.npy", a)
    sitk = pytest.importorskip("SimpleITK")
    sitk.WriteImage(sitk.GetImageFromArray(np.array([[2, 0, 0]], dtype=np.uint8)), str(folder / "b.nrrd"))
    s = ClassStatistics.from_folder(folder, progress=False)
    assert s.num_classes == 6 and s.case_ids == ["a", "b"]
    np.testing.assert_array_equal(s.counts, [[1, 1, 0, 0, 0, 2], [2, 0, 1, 0, 0, 0]])


@pytest.mark.parametrize("workers", [1, 2])
def test_from_folder_bad_labels_name_the_file_and_leave_no_cache(tmp_path, workers):
    folder = tmp_path / "labels"
    label_folder(folder, n=8, k=3)
    save_nifti(folder / "case_004.nii.gz", np.array([[0, 1], [7, 9]], dtype=np.int16))
    with pytest.raises(ValueError, match=r"case_004\.nii\.gz: label values 7, 9 outside \[0, 3\)"):
        ClassStatistics.from_folder(folder, 3, num_workers=workers, progress=False)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_from_folder_non_integer_float_labels(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    save_nifti(folder / "soft.nii.gz", np.array([[0.0, 0.5], [1.0, 1.0]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"soft\.nii\.gz: float label image with non-integer values, e\.g\. \[0\.5\]"):
        ClassStatistics.from_folder(folder, 2, progress=False)


def test_from_folder_unreadable_and_empty(tmp_path):
    folder = tmp_path / "labels"
    label_folder(folder, n=3)
    (folder / "broken.nii.gz").write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match=r"broken\.nii\.gz: cannot read label image"):
        ClassStatistics.from_folder(folder, 4, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no label images"):
        ClassStatistics.from_folder(tmp_path / "empty", 4)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ClassStatistics.from_folder(tmp_path / "missing", 4)


# -------------------------------------------------------------------------------------------- from_data_dicts
def test_from_data_dicts_paths_arrays_and_monai_dataset(tmp_path):
    from monai.data import Dataset
    from monai.transforms import LoadImaged, RandSpatialCropSamplesd

    cases = label_folder(tmp_path / "labels", n=4, k=3)
    files = sorted((tmp_path / "labels").glob("case_*"))
    dicts = [{"image": "unused", "seg": str(f)} for f in files]
    expected = np.array([ref(cases[c], 3)[0] for c in sorted(cases)])

    s = ClassStatistics.from_data_dicts(dicts, label_key="seg", num_classes=3, progress=False)
    np.testing.assert_array_equal(s.counts, expected)
    assert s.case_ids == sorted(cases)
    arrays = ClassStatistics.from_data_dicts([{"seg": cases[c]} for c in sorted(cases)], "seg", 3, progress=False)
    np.testing.assert_array_equal(arrays.counts, expected)

    ds = Dataset(dicts, transform=LoadImaged(keys="seg"))
    np.testing.assert_array_equal(ClassStatistics.from_data_dicts(ds, "seg", 3, progress=False).counts, expected)
    patches = Dataset(
        dicts,
        transform=[
            LoadImaged(keys="seg", ensure_channel_first=True),
            RandSpatialCropSamplesd(keys="seg", roi_size=(2, 2, 2), num_samples=3, random_size=False),
        ],
    )
    p = ClassStatistics.from_data_dicts(patches, "seg", 3, progress=False)
    assert p.num_images == 12 and (p.voxels == 8).all()


# -------------------------------------------------------------------------------------------- nnU-Net raw
def nnunet_raw(folder, labels, n=6, seed=0, file_ending=".nii.gz"):
    """A raw nnU-Net dataset (labelsTr + dataset.json) with label values from ``labels``; returns {case: array}."""
    (folder / "labelsTr").mkdir(parents=True)
    values = sorted(
        {v for v in labels.values() if not isinstance(v, list)}
        | {x for v in labels.values() if isinstance(v, list) for x in v}
    )
    rng = np.random.default_rng(seed)
    cases = {
        f"c{i:02d}": save_nifti(
            folder / "labelsTr" / f"c{i:02d}{file_ending}", rng.choice(values, (6, 5, 4)).astype(np.uint8)
        )
        for i in range(n)
    }
    (folder / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": labels, "numTraining": n, "file_ending": file_ending})
    )
    return cases


def test_from_nnunet_raw_reads_labels_and_ignore(tmp_path):
    labels = {"background": 0, "liver": 1, "tumour": 2, "ignore": 3}
    cases = nnunet_raw(tmp_path / "Dataset001_X", labels)
    s = ClassStatistics.from_nnunet_raw(tmp_path / "Dataset001_X", progress=False)
    assert (s.num_classes, s.ignore_index, s.class_names) == (3, 3, ["background", "liver", "tumour"])
    for i, c in enumerate(s.case_ids):
        counts, ignored = ref(cases[c], 3, 3)
        np.testing.assert_array_equal(s.counts[i], counts)
        assert s.ignored[i] == ignored > 0
    sub = ClassStatistics.from_nnunet_raw(tmp_path / "Dataset001_X", cases=["c03", "c01"], progress=False)
    assert sub.case_ids == ["c03", "c01"]
    np.testing.assert_array_equal(sub.counts, s.subset(["c03", "c01"]).counts)
    with pytest.raises(ValueError, match="cases not in the dataset: zz"):
        ClassStatistics.from_nnunet_raw(tmp_path / "Dataset001_X", cases=["zz"])
    with pytest.raises(ValueError, match="declares num_classes=3, but num_classes=5"):
        ClassStatistics.from_nnunet_raw(tmp_path / "Dataset001_X", num_classes=5)


def test_from_nnunet_raw_dataset_key_and_regions(tmp_path):
    folder = tmp_path / "Dataset002_R"
    labels = {"background": 0, "whole": [1, 2], "core": 2}
    cases = nnunet_raw(folder, labels, n=3)
    dj = json.loads((folder / "dataset.json").read_text())
    dj["dataset"] = {"only": {"label": "labelsTr/c01.nii.gz", "images": []}}
    dj["regions_class_order"] = [1, 2]
    (folder / "dataset.json").write_text(json.dumps(dj))
    s = ClassStatistics.from_nnunet_raw(folder, progress=False)
    assert s.case_ids == ["only"] and s.class_names == ["background", "1", "core"]
    np.testing.assert_array_equal(s.counts[0], ref(cases["c01"], 3)[0])


def test_nnunet_label_info_rules():
    assert nnunet_label_info({"labels": {"background": 0, "a": 1, "b": 2}}) == (3, None, ["background", "a", "b"])
    with pytest.raises(ValueError, match="ignore label must be the highest label value"):
        nnunet_label_info({"labels": {"background": 0, "a": 1, "ignore": 5}})


# ------------------------------------------------------------------------- nnU-Net preprocessed (real nnU-Net)
N_PRE = 10


@pytest.fixture(scope="module")
def nnunet_dataset(tmp_path_factory):
    """A tiny 2D nnU-Net dataset (10 cases of 32x32, ignore label, a zero image corner -> -1 in the segmentation)
    planned and preprocessed by the real ``nnUNetv2_plan_and_preprocess``. Returns (preprocessed folder, labels)."""
    pytest.importorskip("nnunetv2")
    root = tmp_path_factory.mktemp("nnunet")
    raw = root / "raw" / "Dataset991_Tiny"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    labels = {}
    yy, xx = np.mgrid[:32, :32]
    for i in range(N_PRE):
        img = rng.integers(1, 200, (32, 32, 1)).astype(np.float32)
        if i == 0:
            img[(yy + xx < 8)[..., None]] = 0  # outside the nonzero mask, inside the bounding box: seg -1
        lab = np.zeros((32, 32, 1), np.uint8)
        lab[10:20, 6:14] = 1
        lab[20 : 21 + i, 12:22] = 2
        lab[31, : i + 1] = 3  # ignore
        save_nifti(raw / "imagesTr" / f"case{i:02d}_0000.nii.gz", img)
        labels[f"case{i:02d}"] = save_nifti(raw / "labelsTr" / f"case{i:02d}.nii.gz", lab)
    (raw / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "a": 1, "b": 2, "ignore": 3},
                "numTraining": N_PRE,
                "file_ending": ".nii.gz",
            }
        )
    )
    env = dict(
        os.environ,
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "pre"),
        nnUNet_results=str(root / "results"),
        nnUNet_def_n_proc="1",
    )
    exe = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    proc = subprocess.run(
        [
            str(exe if exe.exists() else "nnUNetv2_plan_and_preprocess"),
            "-d",
            "991",
            "-c",
            "2d",
            "-np",
            "1",
            "--verify_dataset_integrity",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return root / "pre" / "Dataset991_Tiny", labels


@pytest.fixture
def preprocessed(nnunet_dataset, tmp_path):
    """A fresh copy of the preprocessed dataset (tests write splits_final.json)."""
    folder, labels = nnunet_dataset
    return Path(shutil.copytree(folder, tmp_path / folder.name)), labels


def expected_counts(labels, cases):
    return np.array([ref(labels[c], 3, 3)[0] for c in cases]), np.array([ref(labels[c], 3, 3)[1] for c in cases])


@pytest.mark.slow
def test_preprocessed_fold_matches_raw_labels_and_writes_nnunet_split(preprocessed):
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    folder, labels = preprocessed
    assert not (folder / "splits_final.json").exists()
    s = ClassStatistics.from_nnunet_preprocessed(folder, "2d", fold=0, progress=False)
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == generate_crossval_split(sorted(labels), seed=12345, n_splits=5)
    assert s.case_ids == splits[0]["train"] and len(s.case_ids) == 8
    counts, ignored = expected_counts(labels, s.case_ids)
    np.testing.assert_array_equal(s.counts, counts)
    np.testing.assert_array_equal(s.ignored, ignored)
    assert (s.num_classes, s.ignore_index, s.class_names) == (3, 3, ["background", "a", "b"])
    blosc2 = pytest.importorskip("blosc2")
    assert (blosc2.open(str(folder / "nnUNetPlans_2d" / "case00_seg.b2nd"))[:] == -1).any()  # -1 was counted


@pytest.mark.slow
def test_preprocessed_custom_splits_all_and_extra_fold(preprocessed):
    folder, labels = preprocessed
    custom = [{"train": ["case00", "case05", "case09"], "val": ["case01"]}, {"train": ["case02"], "val": ["case03"]}]
    (folder / "splits_final.json").write_text(json.dumps(custom))
    s = ClassStatistics.from_nnunet_preprocessed(folder, fold=0, progress=False, num_workers=2)
    assert s.case_ids == ["case00", "case05", "case09"]
    np.testing.assert_array_equal(s.counts, expected_counts(labels, s.case_ids)[0])
    assert ClassStatistics.from_nnunet_preprocessed(folder, fold=1, progress=False).case_ids == ["case02"]
    every = ClassStatistics.from_nnunet_preprocessed(folder, fold="all", progress=False)
    assert every.case_ids == sorted(labels)
    np.testing.assert_array_equal(every.counts, expected_counts(labels, sorted(labels))[0])
    with pytest.warns(UserWarning, match="80:20"):
        extra = ClassStatistics.from_nnunet_preprocessed(folder, fold=3, progress=False)
    rnd = np.random.RandomState(seed=12345 + 3)
    assert extra.case_ids == [sorted(labels)[i] for i in rnd.choice(N_PRE, 8, replace=False)]


@pytest.mark.slow
def test_preprocessed_errors_and_cli(preprocessed, capsys):
    from monai_mime.cli import main

    folder, labels = preprocessed
    with pytest.raises(ValueError, match="no configuration '3d_fullres'"):
        ClassStatistics.from_nnunet_preprocessed(folder, "3d_fullres")
    with pytest.raises(FileNotFoundError, match="Other.json"):
        ClassStatistics.from_nnunet_preprocessed(folder, plans_identifier="Other")
    assert main(["stats", str(folder), "--fold", "all", "-q", "--out", str(folder / "s.json")]) == 0
    out = capsys.readouterr().out
    total = expected_counts(labels, sorted(labels))[0].sum(axis=0)
    assert f"{total[1]:,}" in out and "10/10" in out and "nnunet_preprocessed" in out
    assert main(["stats", str(folder), "--num-classes", "3"]) == 2
