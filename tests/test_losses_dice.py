"""Soft Dice (Eq. 1), V-Net (Eq. 5), Generalized Dice (Eq. 4): agreement with MONAI, Eq. 2, gradcheck."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from monai.losses import DiceLoss, GeneralizedDiceLoss
from torch.autograd import gradcheck
from torch.nn.functional import one_hot

from monai_mime import GeneralizedSoftDiceLoss, SoftDiceLoss, VNetDiceLoss

PAIRS = {
    "dice": (SoftDiceLoss, lambda **kw: DiceLoss(**kw)),
    "vnet": (VNetDiceLoss, lambda **kw: DiceLoss(squared_pred=True, **kw)),
    "gdl": (GeneralizedSoftDiceLoss, lambda **kw: GeneralizedDiceLoss(**kw)),
}
OPTIONS = list(itertools.product([True, False], [False, True], ["mean", "sum", "none"], ["softmax", "sigmoid"]))


def _all_present_batch(b: int = 3, k: int = 4, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, k, (b, 1, size, size))
    labels[:, 0, 0, :k] = torch.arange(k)  # every class present in every image
    return torch.randn(b, k, size, size) * 2, labels


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("include_background,batch,reduction,activation", OPTIONS)
def test_agrees_with_monai_when_every_class_is_present(
    name: str, include_background: bool, batch: bool, reduction: str, activation: str
) -> None:
    ours, theirs = PAIRS[name]
    kwargs: dict[str, Any] = dict(
        include_background=include_background, batch=batch, reduction=reduction, to_onehot_y=True
    )
    kwargs[activation] = True
    logits, labels = _all_present_batch()
    x1 = logits.clone().requires_grad_()
    x2 = logits.clone().requires_grad_()
    got, expected = ours(**kwargs)(x1, labels), theirs(**kwargs)(x2, labels)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    got.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", list(PAIRS))
def test_one_hot_target_and_label_map_give_the_same_loss(name: str) -> None:
    ours, _ = PAIRS[name]
    logits, labels = _all_present_batch()
    target = one_hot(labels[:, 0], 4).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(ours(softmax=True, to_onehot_y=True)(logits, labels), ours(softmax=True)(logits, target))


def test_soft_dice_gradient_is_equation_2() -> None:
    """∂L/∂s = −2(U − I)/U² on the ground truth and 2I/U² elsewhere: two values per image and class."""
    probs = torch.softmax(torch.randn(2, 3, 10, 10, dtype=torch.float64), 1).requires_grad_()
    labels = torch.randint(0, 3, (2, 1, 10, 10))
    loss = SoftDiceLoss(to_onehot_y=True, reduction="sum", smooth_nr=0.0, smooth_dr=0.0)
    (grad,) = torch.autograd.grad(loss(probs, labels), probs)
    y = one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).to(probs.dtype)
    intersection = (y * probs).sum((2, 3), keepdim=True)
    union = (y + probs).sum((2, 3), keepdim=True).detach()
    expected = torch.where(y > 0, -2 * (union - intersection) / union**2, 2 * intersection / union**2)
    torch.testing.assert_close(grad, expected)
    for b, k in itertools.product(range(2), range(3)):
        assert torch.unique(grad[b, k]).numel() == 2


@pytest.mark.parametrize("loss_class", [SoftDiceLoss, VNetDiceLoss, GeneralizedSoftDiceLoss])
@pytest.mark.parametrize("label_map", [True, False])
def test_gradcheck(loss_class: type, label_map: bool) -> None:
    logits = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 5, 4))
    target = labels if label_map else one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).double()
    loss = loss_class(softmax=True, to_onehot_y=label_map)
    assert gradcheck(lambda x: loss(x, target), (logits,))


def test_gdl_all_background_patch_is_not_a_free_perfect_score() -> None:
    """MONAI returns exactly 0 with a zero gradient here; ours penalises predicted foreground (documented)."""
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    labels = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    monai_loss = GeneralizedDiceLoss(softmax=True, to_onehot_y=True, include_background=False)(logits, labels)
    assert monai_loss.item() == 0.0
    ours = GeneralizedSoftDiceLoss(softmax=True, to_onehot_y=True, include_background=False)(logits, labels)
    assert ours.item() > 0.99
    (grad,) = torch.autograd.grad(ours, logits)
    probs = torch.softmax(logits, 1)
    # lowering a foreground logit lowers the loss: the gradient on foreground channels is positive
    assert (grad[:, 1:] > 0).all() and torch.isfinite(grad).all()
    assert probs[:, 1:].sum() > 0


def test_gdl_absent_class_takes_the_largest_present_weight_like_monai() -> None:
    logits = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 2, (2, 1, 8, 8))  # class 2 absent everywhere, classes 0 and 1 present
    labels[:, 0, 0, :2] = torch.tensor([0, 1])
    kwargs: dict[str, Any] = dict(softmax=True, to_onehot_y=True)
    torch.testing.assert_close(
        GeneralizedSoftDiceLoss(**kwargs)(logits, labels), GeneralizedDiceLoss(**kwargs)(logits, labels)
    )


@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
def test_gdl_weight_types_match_monai(w_type: str) -> None:
    logits, labels = _all_present_batch()
    kwargs: dict[str, Any] = dict(softmax=True, to_onehot_y=True, w_type=w_type)
    torch.testing.assert_close(
        GeneralizedSoftDiceLoss(**kwargs)(logits, labels), GeneralizedDiceLoss(**kwargs)(logits, labels)
    )


def test_absent_class_in_soft_dice_is_finite_and_small_for_an_empty_prediction() -> None:
    logits = torch.full((1, 2, 4, 4), -30.0)
    logits[:, 0] = 30.0  # predicts background everywhere
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    terms = SoftDiceLoss(softmax=True, to_onehot_y=True, reduction="none")(logits, labels)
    assert terms.shape == (1, 2, 1, 1)
    assert terms[0, 1].item() < 1e-3 and torch.isfinite(terms).all()
