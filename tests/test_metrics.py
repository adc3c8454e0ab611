"""Per-class Dice / HD95 with the paper's conventions (monai_mime.metrics), on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_mime.metrics import (
    CaseMetrics,
    MetricAccumulator,
    dice_per_class,
    evaluate_case,
    hd95_per_class,
    image_diagonal,
    volume_counts,
    volume_ratio_per_class,
)

torch.set_num_threads(1)


def _square(shape=(20, 20), lo=4, hi=9, value=1, base=None):
    out = np.zeros(shape, dtype=np.uint8) if base is None else base.copy()
    out[lo:hi, lo:hi] = value
    return out


# --------------------------------------------------------------------------------------------- conventions
def test_perfect_prediction_scores_one_and_zero():
    gt = _square()
    gt[12:16, 12:18] = 2
    assert np.allclose(dice_per_class(gt, gt, 3), [1.0, 1.0])
    assert np.allclose(hd95_per_class(gt, gt, 3), [0.0, 0.0])


def test_missed_class_dice_zero_hd95_diagonal():
    gt = _square()
    pred = np.zeros_like(gt)
    assert dice_per_class(pred, gt, 2).tolist() == [0.0]
    assert hd95_per_class(pred, gt, 2).tolist() == [pytest.approx(math.hypot(20, 20))]


def test_diagonal_is_in_physical_units():
    gt = _square((10, 30))
    pred = np.zeros_like(gt)
    hd = hd95_per_class(pred, gt, 2, spacing=(2.0, 0.5))
    assert hd[0] == pytest.approx(math.hypot(10 * 2.0, 30 * 0.5))
    # 3D volume with anisotropic spacing
    gt3 = np.zeros((8, 9, 4), dtype=np.int64)
    gt3[2:5, 2:5, 1:3] = 1
    hd3 = hd95_per_class(np.zeros_like(gt3), gt3, 2, spacing=(1.5, 1.5, 5.0))
    assert hd3[0] == pytest.approx(math.sqrt(12.0**2 + 13.5**2 + 20.0**2))
    assert image_diagonal((8, 9, 4), (1.5, 1.5, 5.0)) == pytest.approx(hd3[0])
    assert image_diagonal((3, 4), 2.0) == pytest.approx(10.0)


def test_false_positive_where_nothing_to_predict():
    gt = np.zeros((20, 20), dtype=np.uint8)
    pred = _square()
    assert dice_per_class(pred, gt, 2).tolist() == [0.0]
    assert hd95_per_class(pred, gt, 2).tolist() == [pytest.approx(math.hypot(20, 20))]


def test_nothing_to_predict_nothing_predicted():
    gt = _square()  # class 2 absent from both
    d = dice_per_class(gt, gt, 3)
    h = hd95_per_class(gt, gt, 3)
    assert d[1] == 1.0 and h[1] == 0.0
    ex = dice_per_class(gt, gt, 3, both_empty="exclude")
    assert isinstance(ex, np.ma.MaskedArray)
    assert ex.mask.tolist() == [False, True]
    assert ex.mean() == 1.0  # the excluded entry takes no part
    assert not np.isnan(ex.filled(0.0)).any()
    with pytest.raises(ValueError, match="both_empty"):
        dice_per_class(gt, gt, 3, both_empty="nan")  # type: ignore[arg-type]


def test_include_background_and_channel_dim_and_tensors():
    gt = _square()
    pred = _square(lo=5, hi=10)
    d_fg = dice_per_class(pred, gt, 2)
    d_all = dice_per_class(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None], 2, include_background=True)
    assert d_all.shape == (2,) and d_all[1] == pytest.approx(d_fg[0])
    # 2 * |4x4 overlap| / (25 + 25)
    assert d_fg[0] == pytest.approx(2 * 16 / 50)
    assert len(hd95_per_class(pred, gt, 2, include_background=True)) == 2


# ------------------------------------------------------------------------------------- agreement with MONAI
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_matches_monai_on_a_normal_case():
    from monai.metrics import compute_dice, compute_hausdorff_distance

    rng = np.random.default_rng(0)
    gt = np.zeros((40, 36), dtype=np.int64)
    gt[5:20, 5:25] = 1
    gt[22:35, 10:30] = 2
    gt[8:12, 28:33] = 3
    pred = gt.copy()
    noise = rng.random(gt.shape) < 0.08
    pred[noise] = rng.integers(0, 4, size=int(noise.sum()))
    spacing = (0.7, 1.3)

    oh = lambda x: torch.nn.functional.one_hot(torch.from_numpy(x), 4).permute(2, 0, 1)[None].float()  # noqa: E731
    ref_d = compute_dice(oh(pred), oh(gt), include_background=False)[0].numpy()
    ref_h = compute_hausdorff_distance(oh(pred), oh(gt), include_background=False, percentile=95, spacing=spacing)[0]
    assert np.allclose(dice_per_class(pred, gt, 4), ref_d, atol=1e-6)
    assert np.allclose(hd95_per_class(pred, gt, 4, spacing=spacing), ref_h.numpy(), atol=1e-5)
    # Dice by hand
    for k in (1, 2, 3):
        p, g = pred == k, gt == k
        assert dice_per_class(pred, gt, 4)[k - 1] == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()))


def test_hd95_by_hand():
    # two 1-pixel-wide vertical bars 3 px apart: every surface distance is 3 (x spacing 2 -> 6)
    gt = np.zeros((10, 12), dtype=np.uint8)
    pred = np.zeros_like(gt)
    gt[2:8, 3] = 1
    pred[2:8, 6] = 1
    assert hd95_per_class(pred, gt, 2)[0] == pytest.approx(3.0)
    assert hd95_per_class(pred, gt, 2, spacing=(1.0, 2.0))[0] == pytest.approx(6.0)


# ----------------------------------------------------------------------------------------------- volumes
def test_volume_counts_and_ratio():
    gt = _square()  # 25 voxels of class 1
    pred = _square(lo=4, hi=14)  # 100 voxels
    pc, gc = volume_counts(pred, gt, 3)
    assert pc.tolist() == [100, 0] and gc.tolist() == [25, 0]
    r = volume_ratio_per_class(pred, gt, 3)
    assert r[0] == pytest.approx(4.0) and r[1] == 1.0  # class 2: nothing to predict, nothing predicted
    # a set: sums before dividing, false positives on an image without the class count
    empty = np.zeros_like(gt)
    r2 = volume_ratio_per_class([gt, pred], [gt, empty], 2)
    assert r2[0] == pytest.approx((25 + 100) / 25)
    assert volume_ratio_per_class(pred, empty, 2)[0] == math.inf
    assert volume_ratio_per_class(empty, gt, 2)[0] == 0.0


# ------------------------------------------------------------------------------------------ accumulation
def test_accumulator_means_std_and_exclusion():
    gt1 = _square()
    gt2 = np.zeros_like(gt1)  # class absent
    cases = [
        evaluate_case(gt1, gt1, 2, case_id="hit"),  # Dice 1, HD 0
        evaluate_case(np.zeros_like(gt1), gt1, 2, case_id="miss"),  # Dice 0, HD diag
        evaluate_case(gt2, gt2, 2, case_id="empty"),  # both empty: 1 and 0
    ]
    diag = math.hypot(20, 20)
    s = MetricAccumulator(["fg"])
    s.extend(cases)
    out = s.summary()["per_class"]["fg"]
    assert out["dice_mean"] == pytest.approx(2 / 3)
    assert out["dice_std"] == pytest.approx(np.std([1, 0, 1]))
    assert out["hd95_mean"] == pytest.approx(diag / 3)
    assert out["num_cases"] == 3 and out["num_cases_present"] == 2
    assert out["volume_ratio"] == pytest.approx(25 / 50)
    ex = MetricAccumulator(["fg"], exclude_both_empty=True)
    ex.extend(cases)
    out = ex.summary()
    assert out["per_class"]["fg"]["dice_mean"] == pytest.approx(0.5)
    assert out["per_class"]["fg"]["hd95_mean"] == pytest.approx(diag / 2)
    assert out["per_class"]["fg"]["num_cases"] == 2
    assert out["mean"]["dice"] == pytest.approx(0.5)
    # round trip through JSON-able dicts
    again = CaseMetrics.from_dict(cases[1].to_dict())
    assert again.case_id == "miss" and again.hd95[0] == pytest.approx(diag)


def test_accumulator_all_excluded_is_none_not_nan():
    gt = np.zeros((6, 6), dtype=np.uint8)
    acc = MetricAccumulator(["fg"], exclude_both_empty=True)
    acc.add(evaluate_case(gt, gt, 2))
    out = acc.summary()
    assert out["per_class"]["fg"]["dice_mean"] is None and out["mean"]["dice"] is None
    with pytest.raises(ValueError):
        MetricAccumulator(["a", "b"]).add(evaluate_case(gt, gt, 2))
    with pytest.raises(ValueError):
        MetricAccumulator(["a"]).summary()


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("pred", "gt", "k", "match"),
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), 2, "same spatial shape"),
        (np.full((4, 4), 3), np.zeros((4, 4)), 2, "outside"),
        (np.full((4, 4), 0.5), np.zeros((4, 4)), 2, "integer"),
        (np.zeros((4, 4)), np.zeros((4, 4)), 0, "num_classes"),
    ],
)
def test_bad_input(pred, gt, k, match):
    with pytest.raises(ValueError, match=match):
        dice_per_class(pred, gt, k)


def test_bad_spacing():
    gt = _square()
    with pytest.raises(ValueError, match="spacing"):
        hd95_per_class(gt, gt, 2, spacing=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95_per_class(gt, gt, 2, spacing=-1.0)
    with pytest.raises(TypeError):
        dice_per_class([[0, 1]], gt, 2)  # type: ignore[arg-type]
