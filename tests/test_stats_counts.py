"""The counting kernel and ClassStatistics: counts against plain numpy, every weight mode pinned, regions, JSON."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_mime.stats import ClassStatistics, CorruptStatisticsError, count_labels, counting
from monai_mime.stats.counts import WEIGHT_MODES


def reference_counts(arr, k, ignore=None, negative_background=False):
    """Independent count: one boolean sum per class."""
    arr = np.asarray(arr).astype(np.int64)
    if negative_background:
        arr = np.where(arr == -1, 0, arr)
    counts = np.array([(arr == c).sum() for c in range(k)], dtype=np.int64)
    if ignore is not None and 0 <= ignore < k:
        counts[ignore] = 0
    return counts, int((arr == ignore).sum()) if ignore is not None else 0


# --------------------------------------------------------------------------------------------------- count_labels
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_count_labels_matches_numpy(dtype, order):
    rng = np.random.default_rng(0)
    arr = np.asarray(rng.integers(0, 5, (17, 9, 6)), dtype=dtype, order=order)
    counts, ignored = count_labels(arr, 5)
    assert counts.dtype == np.int64 and ignored == 0
    np.testing.assert_array_equal(counts, reference_counts(arr, 5)[0])


@pytest.mark.parametrize("k", [3, 40])  # 40 classes: the bincount path
@pytest.mark.parametrize("ignore", [None, 255, 40, 2, -100])
def test_count_labels_ignore_index(k, ignore):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, k, 2000).astype(np.int32)
    if ignore is not None:
        arr[rng.random(2000) < 0.2] = ignore
    counts, ignored = count_labels(arr, k, ignore_index=ignore)
    ref, ref_ignored = reference_counts(arr, k, ignore)
    np.testing.assert_array_equal(counts, ref)
    assert ignored == ref_ignored
    assert counts.sum() + ignored == arr.size


@pytest.mark.parametrize("chunk", [4099, None])
def test_count_labels_across_chunks(monkeypatch, chunk):
    if chunk:
        monkeypatch.setattr(counting, "_CHUNK", chunk)
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 4, (3, 500, 401)).astype(np.uint8)  # 601,500 voxels: 3 chunks of 2**18 and a tail
    arr[rng.random(arr.shape) < 0.1] = 255
    counts, ignored = count_labels(np.asfortranarray(arr), 4, ignore_index=255)
    ref, ref_ignored = reference_counts(arr, 4, 255)
    np.testing.assert_array_equal(counts, ref)
    assert ignored == ref_ignored
    arr[2, 499, 400] = 9  # a bad value in the last chunk
    with pytest.raises(ValueError, match="values 9 outside"):
        count_labels(arr, 4, ignore_index=255)


def test_count_labels_bool_tensor_and_inferred_k():
    t = torch.tensor([[0, 1, 1], [3, 3, 3]])
    np.testing.assert_array_equal(count_labels(t, 4)[0], [1, 2, 0, 3])
    np.testing.assert_array_equal(count_labels(t)[0], [1, 2, 0, 3])  # K = max + 1
    np.testing.assert_array_equal(count_labels(np.array([True, False, True]), 2)[0], [1, 2])
    np.testing.assert_array_equal(count_labels(np.array([0, 1, 255], np.uint8), None, 255)[0], [1, 1])
    assert count_labels(np.zeros((0,), np.uint8), 3)[0].tolist() == [0, 0, 0]


def test_count_labels_nnunet_minus_one_is_background():
    arr = np.array([-1, -1, 0, 1, 2, 3, 3], dtype=np.int8)
    np.testing.assert_array_equal(count_labels(arr, 3, ignore_index=3, negative_background=True)[0], [3, 1, 1])
    for k in (3, 40):
        counts, ignored = count_labels(arr, k, ignore_index=3, negative_background=True)
        np.testing.assert_array_equal(counts, reference_counts(arr, k, 3, negative_background=True)[0])
        assert ignored == 2
    with pytest.raises(ValueError, match="-1"):
        count_labels(arr, 3, ignore_index=3)


@pytest.mark.parametrize(
    "arr,match",
    [
        (np.array([0, 1, 7, 9], np.uint8), r"case\.nii\.gz: label values 7, 9 outside \[0, 4\)"),
        (np.array([0, -2, 1], np.int16), r"case\.nii\.gz: label values -2 outside"),
        (np.array([0, 2**30], np.int64), r"label values 1073741824 outside"),
        (np.array([0, 1, 5, 255], np.uint8), r"values 5 outside \[0, 4\) \(ignore label 255\)"),
        (np.array([0.0, 1.5]), r"case\.nii\.gz: float label image with non-integer values, e\.g\. \[1\.5\]"),
        (np.array([0.0, np.nan]), r"non-integer"),
        (np.array(["a"]), r"dtype"),
    ],
)
def test_count_labels_rejects_bad_values(arr, match):
    with pytest.raises(ValueError, match=match):
        count_labels(arr, 4, ignore_index=255 if arr.dtype == np.uint8 else None, name="case.nii.gz")


# ------------------------------------------------------------------------------------------------ from_labels
def two_images():
    """A: 10 voxels, G = (6, 3, 1). B: 20 voxels, G = (14, 2, 4). N = 2, K = 3."""
    a = np.array([0] * 6 + [1] * 3 + [2] * 1)
    b = np.array([0] * 14 + [1] * 2 + [2] * 4).reshape(4, 5)
    return ClassStatistics.from_labels(iter([a, torch.from_numpy(b)]), 3, case_ids=["A", "B"])


def test_from_labels_attributes():
    s = two_images()
    assert s.num_images == 2 and s.num_classes == 3 and s.case_ids == ["A", "B"]
    np.testing.assert_array_equal(s.counts, [[6, 3, 1], [14, 2, 4]])
    np.testing.assert_array_equal(s.voxels, [10, 20])
    np.testing.assert_array_equal(s.ignored, [0, 0])
    np.testing.assert_array_equal(s.total_counts, [20, 5, 5])
    np.testing.assert_array_equal(s.presence, [2, 2, 2])
    np.testing.assert_allclose(s.mean_counts, [10, 2.5, 2.5])
    np.testing.assert_allclose(s.fractions, [20 / 30, 5 / 30, 5 / 30])
    assert s.fingerprint.startswith("sha256:") and s.source == "labels"
    assert "num_images=2" in repr(s)


def test_from_labels_streams_a_generator_of_random_volumes():
    rng = np.random.default_rng(2)
    vols = [rng.integers(0, 4, rng.integers(5, 30, 3)).astype(np.uint8) for _ in range(6)]
    s = ClassStatistics.from_labels((v for v in vols), 4, ignore_index=None)
    np.testing.assert_array_equal(s.counts, [reference_counts(v, 4)[0] for v in vols])
    np.testing.assert_array_equal(s.voxels, [v.size for v in vols])


def test_from_labels_case_ids_must_match():
    with pytest.raises(ValueError, match="case ids"):
        ClassStatistics.from_labels([np.zeros(3)], 2, case_ids=["a", "b"])
    with pytest.raises(ValueError, match="case ids"):
        ClassStatistics.from_labels([np.zeros(3)] * 2, 2, case_ids=["a"])


# ------------------------------------------------------------------------------------------------ weight modes
# two_images(): Ḡ = (10, 2.5, 2.5), B̄ = (5, 12.5, 12.5), N = 2, Σ G = (20, 5, 5), Σ (|Ω| - G) = (10, 25, 25).
PINNED = {
    ("paper", ()): ([1 / 40, 1 / 10, 1 / 10], [1 / 20, 1 / 50, 1 / 50]),
    ("mean", ()): ([0.1, 0.4, 0.4], [0.2, 0.08, 0.08]),
    ("dice", ()): ([0.075, 0.3, 0.3], [0.025, 0.1, 0.1]),
    ("dice", (("overlap", 1.0),)): ([0.05, 0.2, 0.2], [0.05, 0.2, 0.2]),
    ("dice", (("overlap", 0.2),)): ([0.09, 0.36, 0.36], [0.01, 0.04, 0.04]),
    ("balance", ()): ([0.1, 0.4, 0.4], [0.1 * 2**0.5, 0.4 * 0.2**0.5, 0.4 * 0.2**0.5]),
    ("balance", (("gamma", 1.0),)): ([0.1, 0.4, 0.4], [0.2, 0.08, 0.08]),
    ("balance", (("gamma", 0.0),)): ([0.1, 0.4, 0.4], [0.1, 0.4, 0.4]),
    ("balance", (("gamma", 0.5),)): ([0.1, 0.4, 0.4], [0.1 * 2**0.5, 0.4 * 0.2**0.5, 0.4 * 0.2**0.5]),
}


@pytest.mark.parametrize("mode,params", list(PINNED))
def test_weight_modes_pinned(mode, params):
    a, b = two_images().weights(mode, **dict(params))
    assert a.dtype == b.dtype == np.float64 and a.shape == b.shape == (3,)
    np.testing.assert_allclose(a, PINNED[mode, params][0], rtol=1e-12)
    np.testing.assert_allclose(b, PINNED[mode, params][1], rtol=1e-12)
    np.testing.assert_allclose(two_images().thresholds(mode, **dict(params)), b / (a + b))


def test_every_mode_is_pinned():
    assert {m for m, _ in PINNED} == set(WEIGHT_MODES)


def test_default_mode_is_balance_and_mean_thresholds_are_class_fractions():
    s = two_images()
    for default, balance in zip(s.weights(), s.weights("balance", gamma=0.5)):
        np.testing.assert_array_equal(default, balance)
    np.testing.assert_allclose(s.thresholds("mean"), [10 / 15, 2.5 / 15, 2.5 / 15])
    np.testing.assert_allclose(s.thresholds("dice", overlap=0.3), [0.15] * 3)


def test_patch_size_rescales_counts_per_image():
    # p = 5: scale A = 5/10, B = 5/20 -> Ḡ = (3.25, 1, 0.75), B̄ = (1.75, 4, 4.25)
    s = two_images()
    a, b = s.weights("mean", patch_size=(5,))
    np.testing.assert_allclose(a, [1 / 3.25, 1, 1 / 0.75])
    np.testing.assert_allclose(b, [1 / 1.75, 1 / 4, 1 / 4.25])
    np.testing.assert_allclose(s.weights("dice", patch_size=[1, 5])[0], 1.5 / (2 * np.array([3.25, 1, 0.75])))
    np.testing.assert_allclose(s.weights("paper", patch_size=5)[0], 1 / (4 * np.array([3.25, 1, 0.75])))


def test_ignored_voxels_count_for_neither_side_but_for_patch_scaling():
    # B has 5 ignored voxels: |Ω_B| = 20 counted, size 25 -> patch scale 5/25.
    a = np.array([0] * 6 + [1] * 3 + [2] * 1)
    b = np.array([0] * 14 + [1] * 2 + [2] * 4 + [9] * 5)
    s = ClassStatistics.from_labels([a, b], 3, ignore_index=9)
    np.testing.assert_array_equal(s.voxels, [10, 20])
    np.testing.assert_array_equal(s.ignored, [0, 5])
    np.testing.assert_allclose(s.weights("mean")[1], [0.2, 0.08, 0.08])
    fg = np.mean([[3, 1.5, 0.5], [14 / 5, 2 / 5, 4 / 5]], axis=0)
    np.testing.assert_allclose(s.weights("mean", patch_size=5)[0], 1 / fg)


def test_absent_class_raises_naming_it_or_one_voxel_rule():
    s = ClassStatistics.from_labels([np.array([0, 0, 1]), np.array([0, 1, 1, 1])], 3)
    s.class_names = ["background", "liver", "tumour"]
    with pytest.raises(ValueError, match=r"class 2 \(tumour\) never occurs in the 2 images"):
        s.weights()
    a, b = s.weights("mean", absent="one_voxel")  # Ḡ_2 = 1/N = 0.5
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert a[2] == pytest.approx(2.0) and b[2] == pytest.approx(1 / 3.5)
    assert s.weights("paper", absent="one_voxel")[0][2] == pytest.approx(0.5)  # 1/(N · 1 voxel)
    only_bg = ClassStatistics.from_labels([np.zeros(4, int)], 1)
    with pytest.raises(ValueError, match=r"class 0 \(0\) fills every counted voxel"):
        only_bg.weights("dice", absent="error")


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda s: s.weights("nope"), ValueError, "unknown weight mode 'nope'"),
        (lambda s: s.weights("dice", overlap=0.0), ValueError, r"overlap must lie in \(0, 1\]"),
        (lambda s: s.weights("dice", overlap=1.5), ValueError, "overlap"),
        (lambda s: s.weights("balance", gamma=-0.1), ValueError, r"gamma must lie in \[0, 1\]"),
        (lambda s: s.weights("mean", overlap=0.5), TypeError, "takes no parameters"),
        (lambda s: s.weights("dice", gamma=0.5), TypeError, r"takes \['overlap'\]"),
        (lambda s: s.weights(absent="skip"), ValueError, "absent must be one of"),
        (lambda s: s.weights(patch_size=(0, 4)), ValueError, "patch_size"),
    ],
)
def test_weight_argument_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(two_images())


def test_no_images_gives_an_error():
    s = ClassStatistics.from_labels([], 3)
    assert s.num_images == 0 and s.counts.shape == (0, 3)
    with pytest.raises(ValueError, match="no images \\(or only empty"):
        s.weights()


# ---------------------------------------------------------------------------------------- regions, subset, JSON
def test_regions_sum_their_labels():
    s = two_images()
    r = s.regions([(1, 2), 2, [0, 1, 2]])
    np.testing.assert_array_equal(r.counts, [[4, 1, 10], [6, 4, 20]])
    np.testing.assert_array_equal(r.voxels, s.voxels)
    assert r.class_names == ["1+2", "2", "0+1+2"] and r.num_classes == 3
    with pytest.raises(ValueError, match="fills every counted voxel"):
        r.weights("mean")  # the region of every label has no background
    a, b = s.regions([(1, 2)], names=["whole"]).weights("mean")
    np.testing.assert_allclose([a[0], b[0]], [1 / 5, 1 / 10])
    for bad in ([(1, 1)], [(3,)], [()]):
        with pytest.raises(ValueError, match="distinct values"):
            s.regions(bad)


def test_subset():
    s = two_images().subset(["B"])
    np.testing.assert_array_equal(s.counts, [[14, 2, 4]])
    with pytest.raises(ValueError, match="cases not in"):
        two_images().subset(["C"])


def test_dict_round_trip_and_save_load(tmp_path):
    s = two_images()
    t = ClassStatistics.from_dict(s.to_dict())
    for f in ("counts", "voxels", "ignored"):
        np.testing.assert_array_equal(getattr(t, f), getattr(s, f))
    assert (t.case_ids, t.class_names, t.fingerprint, t.source) == (s.case_ids, s.class_names, s.fingerprint, s.source)
    path = s.save(tmp_path / "sub" / "stats.json")
    u = ClassStatistics.load(path, num_classes=3)
    np.testing.assert_array_equal(u.counts, s.counts)
    with pytest.raises(ValueError, match="3 classes, 4 were requested"):
        ClassStatistics.load(path, num_classes=4)


def test_invalid_fields_rejected():
    with pytest.raises(ValueError, match="at most"):
        ClassStatistics(counts=np.array([[5, 11]]), voxels=np.array([10]), ignored=np.array([0]), case_ids=["a"])
    with pytest.raises(ValueError, match="class names"):
        ClassStatistics(
            counts=np.array([[5, 5]]), voxels=np.array([10]), ignored=np.array([0]), case_ids=["a"], class_names=["x"]
        )
    with pytest.raises(CorruptStatisticsError, match="malformed"):
        ClassStatistics.from_dict({"images": [{"case": "a"}], "num_classes": 2})
