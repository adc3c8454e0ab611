"""Class weights with MONAI's meaning: ``weight`` weights the overlap term's classes (``DiceLoss(weight=...)``) and,
in a compound, also the cross-entropy (``DiceCELoss(weight=...)``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss
from torch.nn import functional as F

from monai_mime import CompoundCELoss, GeneralizedSoftDiceLoss, MimeLoss, SoftDiceCELoss, get_loss
from monai_mime.losses import ClassSumLoss
from tests.test_losses_compound import OPTIONS, _batch, _value_and_grad

WEIGHT = torch.tensor([0.2, 1.0, 3.0, 0.5])


@pytest.mark.parametrize("include_background,batch,reduction,activation", OPTIONS)
def test_weighted_dice_ce_equals_monai_dice_ce_loss(
    include_background: bool, batch: bool, reduction: str, activation: str
) -> None:
    kwargs: dict[str, Any] = dict(
        include_background=include_background, batch=batch, reduction=reduction, to_onehot_y=True
    )
    kwargs[activation] = True
    logits, labels = _batch(seed=2)
    ours = get_loss("dice+ce", weight=WEIGHT, **kwargs)
    got, got_grad = _value_and_grad(ours, logits, labels)
    expected, expected_grad = _value_and_grad(DiceCELoss(weight=WEIGHT, **kwargs), logits, labels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-7)
    unweighted = get_loss("dice+ce", **kwargs)(logits, labels)
    assert abs(float(got - unweighted)) > 1e-3  # the weight changes the loss


@pytest.mark.parametrize("name,squared", [("dice", False), ("vnet", True)])
@pytest.mark.parametrize("include_background,batch,reduction", [(True, False, "mean"), (False, True, "none")])
def test_weighted_dice_and_vnet_equal_monai_dice_loss(
    name: str, squared: bool, include_background: bool, batch: bool, reduction: str
) -> None:
    logits, labels = _batch(seed=6)
    weight = WEIGHT if include_background else WEIGHT[1:]
    kwargs: dict[str, Any] = dict(
        include_background=include_background, batch=batch, reduction=reduction, to_onehot_y=True, softmax=True
    )
    got, got_grad = _value_and_grad(lambda x, t: get_loss(name, weight=weight, **kwargs)(x, t).sum(), logits, labels)
    monai = DiceLoss(weight=weight, squared_pred=squared, **kwargs)
    expected, expected_grad = _value_and_grad(lambda x, t: monai(x, t).sum(), logits, labels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-7)


def test_a_single_weight_applies_to_every_class_like_monai() -> None:
    logits, labels = _batch(seed=7)
    ours = get_loss("dice", weight=2.5, softmax=True, to_onehot_y=True)(logits, labels)
    torch.testing.assert_close(ours, DiceLoss(weight=2.5, softmax=True, to_onehot_y=True)(logits, labels))


def test_float64_logits_with_a_float32_weight() -> None:
    logits, labels = _batch(seed=8)
    kwargs: dict[str, Any] = dict(softmax=True, to_onehot_y=True, include_background=False)
    got = get_loss("dice+ce", weight=WEIGHT, **kwargs)(logits.double(), labels)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, DiceCELoss(weight=WEIGHT.double(), **kwargs)(logits.double(), labels))
    assert torch.isfinite(get_loss("ce", weight=WEIGHT)(logits.double(), labels))


def test_mime_weight_is_a_per_class_factor_on_omega() -> None:
    """``ω_k → weight_k ω_k``: the gradient with respect to the probabilities is the weighted map."""
    logits, labels = _batch(seed=9)
    a, b = torch.tensor([1.0, 6.0, 9.0, 3.0]), torch.tensor([0.8, 0.3, 0.2, 0.4])
    probs = torch.softmax(logits, 1).requires_grad_()
    loss = MimeLoss(a, b, weight=WEIGHT, to_onehot_y=True, reduction="sum")
    (grad,) = torch.autograd.grad(loss(probs, labels), probs)
    y = F.one_hot(labels[:, 0], 4).movedim(-1, 1).float()
    omega = (WEIGHT * (b - (a + b) * y.movedim(1, -1))).movedim(-1, 1)
    torch.testing.assert_close(grad, omega)


def test_gdl_weight_multiplies_sudre_weights() -> None:
    """``w_k = weight_k / G_k²``: with every class present, the loss is Eq. 4 with those weights."""
    logits, labels = _batch(seed=10)
    got = GeneralizedSoftDiceLoss(weight=WEIGHT, softmax=True, to_onehot_y=True, smooth_nr=0, smooth_dr=0)
    s = torch.softmax(logits, 1)
    y = F.one_hot(labels[:, 0], 4).movedim(-1, 1).float()
    g, i, p = y.sum((2, 3)), (s * y).sum((2, 3)), s.sum((2, 3))
    w = WEIGHT / g**2
    expected = (1 - 2 * (w * i).sum(1) / (w * (g + p)).sum(1)).mean()
    torch.testing.assert_close(got(logits, labels), expected)
    assert not torch.allclose(expected, GeneralizedSoftDiceLoss(softmax=True, to_onehot_y=True)(logits, labels))


@pytest.mark.parametrize("name", ["dice+ce", "gdl+ce", "mime+ce", "mime_adaptive+ce"])
def test_a_compound_weight_sets_the_loss_weight_without_background(name: str) -> None:
    extra = {"a": [6.0, 9.0, 3.0], "b": [0.3, 0.2, 0.4]} if name.startswith("mime") else {}
    compound = get_loss(name, weight=WEIGHT, include_background=False, softmax=True, to_onehot_y=True, **extra)
    assert isinstance(compound, CompoundCELoss) and isinstance(compound.loss, ClassSumLoss)
    assert compound.loss.class_weight is not None and compound.loss.class_weight.tolist() == WEIGHT[1:].tolist()
    assert compound.weight is not None and compound.weight.tolist() == WEIGHT.tolist()
    logits, labels = _batch(seed=11)
    assert torch.isfinite(compound(logits, labels))


def test_bad_weights_are_refused() -> None:
    logits, labels = _batch(seed=12)
    with pytest.raises(ValueError, match="weight has 4 values but the loss sees 3 classes"):
        get_loss("dice", weight=WEIGHT, include_background=False, softmax=True, to_onehot_y=True)(logits, labels)
    with pytest.raises(ValueError, match=">= 0"):
        get_loss("vnet", weight=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="pass weight to the compound only"):
        CompoundCELoss(get_loss("dice", weight=WEIGHT), weight=WEIGHT)
    with pytest.raises(ValueError, match="one value per class"):
        SoftDiceCELoss(weight=2.0)


def test_an_overlap_weight_alone_keeps_the_one_pass_path() -> None:
    """Only a cross-entropy weight sends a compound to the two-term path; the loss's own weight rides the fused one."""
    logits, labels = _batch(seed=13)
    kwargs: dict[str, Any] = dict(softmax=True, to_onehot_y=True)
    compound = CompoundCELoss(get_loss("dice", weight=WEIGHT, **kwargs))
    both = get_loss("dice+ce", weight=WEIGHT, **kwargs)
    assert isinstance(both, CompoundCELoss) and not both.fused(logits, labels) and compound.fused(logits, labels)
    got, got_grad = _value_and_grad(compound, logits, labels)

    def reference(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return DiceLoss(weight=WEIGHT, **kwargs)(x, t) + F.cross_entropy(x, t[:, 0])

    expected, expected_grad = _value_and_grad(reference, logits, labels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-7)
