"""Agreement with MONAI beyond batches where every class is in every image: classes absent from some images,
``other_act``, non-default ``smooth_nr``/``smooth_dr``, 3D inputs; Dice, V-Net, GDL and Dice + CE, value and gradient.

(``tests/test_losses_dice.py`` covers the option grid on batches where every class is present.)
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss, GeneralizedDiceLoss

from monai_mime import get_loss

THEIRS = {
    "dice": lambda **kw: DiceLoss(**kw),
    "vnet": lambda **kw: DiceLoss(squared_pred=True, **kw),
    "gdl": lambda **kw: GeneralizedDiceLoss(**kw),
    "dice+ce": lambda **kw: DiceCELoss(**kw),
}
NAMES = list(THEIRS)


def _absent_batch(spatial: tuple[int, ...], k: int = 4, b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels where class 3 is absent from image 0, class 2 from image 1, classes 2 and 3 from image 2
    (background but for three voxels of class 1). Every image holds a foreground class: on an image with none, GDL
    differs from MONAI on purpose (``test_losses_dice.py``)."""
    generator = torch.Generator().manual_seed(7)
    labels = torch.randint(0, k, (b, 1, *spatial), generator=generator)
    labels[0] = labels[0].clamp_max(2)
    labels[1] = torch.where(labels[1] == 2, 1, labels[1])
    labels[2] = 0
    labels[2].view(-1)[:3] = 1
    labels[0].view(-1)[:2] = torch.tensor([0, 1])
    return torch.randn(b, k, *spatial, generator=generator) * 2, labels


def _compare(name: str, logits: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> None:
    kwargs = dict(to_onehot_y=True, **kwargs)
    ours, theirs = get_loss(name, **kwargs), THEIRS[name](**kwargs)
    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    got, expected = ours(x1, labels), theirs(x2, labels)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    (g1,) = torch.autograd.grad(got.sum(), x1)
    (g2,) = torch.autograd.grad(expected.sum(), x2)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "include_background,batch,activation", list(itertools.product([True, False], [False, True], ["softmax", "sigmoid"]))
)
def test_classes_absent_from_some_images(name: str, include_background: bool, batch: bool, activation: str) -> None:
    logits, labels = _absent_batch((10, 9))
    kwargs: dict[str, Any] = dict(include_background=include_background, batch=batch, **{activation: True})
    if name != "dice+ce":
        kwargs["reduction"] = "none" if not batch else "mean"
    _compare(name, logits, labels, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_other_act(name: str) -> None:
    logits, labels = _absent_batch((8, 8))
    _compare(name, logits, labels, other_act=lambda x: torch.sigmoid(2 * x + 0.5), include_background=False)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("smooth_nr,smooth_dr", [(0.0, 1e-6), (1e-3, 1e-2), (0.5, 1.0), (2.0, 0.5)])
def test_smoothing(name: str, smooth_nr: float, smooth_dr: float) -> None:
    logits, labels = _absent_batch((8, 8))
    _compare(name, logits, labels, softmax=True, smooth_nr=smooth_nr, smooth_dr=smooth_dr)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [False, True])
def test_3d(name: str, batch: bool) -> None:
    logits, labels = _absent_batch((6, 5, 4))
    kwargs: dict[str, Any] = dict(softmax=True, batch=batch, include_background=False)
    if name != "dice+ce":  # MONAI's DiceCELoss refuses reduction="none"
        kwargs["reduction"] = "none"  # (B, K, 1, 1, 1) like MONAI's
    _compare(name, logits, labels, **kwargs)
