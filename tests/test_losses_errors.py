"""Bad input gets a clear error that names the problem."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from monai_mime import GeneralizedSoftDiceLoss, MimeLoss, SoftDiceLoss

LABEL_MAP: dict[str, Any] = dict(softmax=True, to_onehot_y=True)


def test_mismatched_spatial_shape() -> None:
    with pytest.raises(ValueError, match=r"target shape \(2, 1, 8, 7\) does not match input \(2, 3, 8, 8\)"):
        SoftDiceLoss(**LABEL_MAP)(torch.randn(2, 3, 8, 8), torch.zeros(2, 1, 8, 7, dtype=torch.long))


def test_label_map_without_to_onehot_y_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match="to_onehot_y=True"):
        SoftDiceLoss(softmax=True)(torch.randn(2, 3, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.long))


def test_labels_outside_range_are_named() -> None:
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    labels[0, 0, 0, 0] = 7
    labels[0, 0, 0, 1] = -1
    with pytest.raises(ValueError, match=r"label values \[-1, 7\] outside \[0, 3\)"):
        MimeLoss([1.0] * 3, [1.0] * 3, **LABEL_MAP)(torch.randn(1, 3, 4, 4), labels)


def test_ignore_index_is_allowed_outside_the_range() -> None:
    labels = torch.full((1, 1, 4, 4), 3)
    labels[0, 0, 0] = 1
    loss = SoftDiceLoss(ignore_index=3, **LABEL_MAP)(torch.randn(1, 3, 4, 4), labels)
    assert torch.isfinite(loss)


def test_non_integer_float_labels() -> None:
    with pytest.raises(ValueError, match="non-integer"):
        SoftDiceLoss(**LABEL_MAP)(torch.randn(1, 3, 4, 4), torch.full((1, 1, 4, 4), 0.5))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_input(bad: float) -> None:
    logits = torch.randn(1, 3, 4, 4)
    logits[0, 1, 2, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        GeneralizedSoftDiceLoss(**LABEL_MAP)(logits, torch.zeros(1, 1, 4, 4, dtype=torch.long))


def test_nan_in_one_hot_target() -> None:
    target = torch.zeros(1, 3, 4, 4)
    target[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        SoftDiceLoss(softmax=True)(torch.randn(1, 3, 4, 4), target)


def test_probabilities_where_logits_expected() -> None:
    probs = torch.softmax(torch.randn(2, 3, 4, 4), 1)
    with pytest.raises(ValueError, match="pass logits with softmax=True, not probabilities"):
        SoftDiceLoss(**LABEL_MAP)(probs, torch.zeros(2, 1, 4, 4, dtype=torch.long))


def test_logits_where_probabilities_expected() -> None:
    with pytest.raises(ValueError, match="not probabilities; pass softmax=True or sigmoid=True"):
        SoftDiceLoss(to_onehot_y=True)(torch.randn(2, 3, 4, 4) * 5, torch.zeros(2, 1, 4, 4, dtype=torch.long))


def test_validate_false_skips_the_value_checks() -> None:
    probs = torch.softmax(torch.randn(2, 3, 4, 4), 1)
    assert torch.isfinite(SoftDiceLoss(validate=False, **LABEL_MAP)(probs, torch.zeros(2, 1, 4, 4, dtype=torch.long)))


@pytest.mark.parametrize(
    "a,b,match",
    [
        ([1.0, 2.0], [1.0, 2.0, 3.0], "same length"),
        ([1.0, -2.0], [1.0, 1.0], "finite positive"),
        ([1.0, float("nan")], [1.0, 1.0], "finite positive"),
        ([], [], "non-empty"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
    ],
)
def test_bad_a_b(a: list, b: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MimeLoss(a, b)


def test_a_b_of_the_wrong_length_for_the_input() -> None:
    loss = MimeLoss([1.0] * 3, [1.0] * 3, include_background=False, **LABEL_MAP)
    with pytest.raises(ValueError, match=r"a/b for 3 classes but the loss sees 2 \(include_background=False\)"):
        loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long))


def test_softmax_and_sigmoid_together() -> None:
    with pytest.raises(ValueError, match="more than one of sigmoid=True, softmax=True"):
        SoftDiceLoss(softmax=True, sigmoid=True)


def test_unknown_reduction() -> None:
    with pytest.raises(ValueError, match="Unsupported reduction 'avg'"):
        SoftDiceLoss(reduction="avg")


def test_gdl_unknown_weight_type() -> None:
    with pytest.raises(ValueError, match="w_type"):
        GeneralizedSoftDiceLoss(w_type="cubic")


def test_integer_input() -> None:
    with pytest.raises(TypeError, match="floating point"):
        SoftDiceLoss(**LABEL_MAP)(torch.zeros(1, 3, 4, 4, dtype=torch.long), torch.zeros(1, 1, 4, 4, dtype=torch.long))


def test_ignore_index_with_a_one_hot_target() -> None:
    with pytest.raises(ValueError, match="ignore_index needs a label-map target"):
        SoftDiceLoss(softmax=True, ignore_index=2)(torch.randn(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
