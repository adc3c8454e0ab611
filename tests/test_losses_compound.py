"""Compound losses ``λ_overlap · X + λ_ce · CE``: agreement with MONAI's DiceCELoss, names, registry, state."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss
from torch import nn
from torch.nn import functional as F

from monai_mime import (
    AdaptiveMimeCELoss,
    AdaptiveMimeLoss,
    ClassStatistics,
    CompoundCELoss,
    GDLCELoss,
    GeneralizedSoftDiceLoss,
    MimeCELoss,
    MimeLoss,
    SoftDiceCELoss,
    SoftDiceLoss,
    VNetCELoss,
    VNetDiceLoss,
    get_loss,
    register_loss,
)
from monai_mime.registry import _REGISTRY

# the grid of tests/test_losses_dice.py; MONAI's DiceCELoss refuses reduction="none"
OPTIONS = list(itertools.product([True, False], [False, True], ["mean", "sum"], ["softmax", "sigmoid"]))


def _batch(b: int = 3, k: int = 4, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (b, 1, size, size), generator=g)
    labels[:, 0, 0, :k] = torch.arange(k)  # every class present in every image
    return torch.randn(b, k, size, size, generator=g) * 2, labels


def _value_and_grad(
    loss: Callable[..., torch.Tensor], logits: torch.Tensor, *args: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.detach().clone().requires_grad_()
    value = loss(x, *args)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


@pytest.mark.parametrize("include_background,batch,reduction,activation", OPTIONS)
def test_dice_ce_equals_monai_dice_ce_loss(
    include_background: bool, batch: bool, reduction: str, activation: str
) -> None:
    kwargs: dict[str, Any] = dict(
        include_background=include_background, batch=batch, reduction=reduction, to_onehot_y=True
    )
    kwargs[activation] = True
    logits, labels = _batch()
    ours = get_loss("dice+ce", **kwargs)
    assert isinstance(ours, CompoundCELoss) and ours.fused(logits, labels) == (activation == "softmax")
    got, got_grad = _value_and_grad(ours, logits, labels)
    expected, expected_grad = _value_and_grad(DiceCELoss(**kwargs), logits, labels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("lambda_dice,lambda_ce,label_smoothing", [(1.0, 0.5, 0.0), (0.3, 2.0, 0.1), (0.0, 1.0, 0.2)])
def test_dice_ce_lambdas_and_label_smoothing_equal_monai(
    lambda_dice: float, lambda_ce: float, label_smoothing: float
) -> None:
    logits, labels = _batch(seed=1)
    kwargs: dict[str, Any] = dict(to_onehot_y=True, softmax=True, lambda_dice=lambda_dice, lambda_ce=lambda_ce)
    ours = SoftDiceCELoss(label_smoothing=label_smoothing, **kwargs)
    assert ours.lambda_overlap == lambda_dice
    got, got_grad = _value_and_grad(ours, logits, labels)
    expected, expected_grad = _value_and_grad(DiceCELoss(label_smoothing=label_smoothing, **kwargs), logits, labels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-7)


def test_one_channel_uses_binary_cross_entropy_like_monai() -> None:
    logits = torch.randn(2, 1, 8, 8)
    target = torch.randint(0, 2, (2, 1, 8, 8)).float()
    got, got_grad = _value_and_grad(get_loss("dice+ce", sigmoid=True), logits, target)
    expected, expected_grad = _value_and_grad(DiceCELoss(sigmoid=True), logits, target)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_grad, expected_grad)


@pytest.mark.parametrize(
    "compound,loss_class,extra",
    [
        (SoftDiceCELoss, SoftDiceLoss, {}),
        (VNetCELoss, VNetDiceLoss, {}),
        (GDLCELoss, GeneralizedSoftDiceLoss, {"w_type": "simple"}),
        (MimeCELoss, MimeLoss, {"a": [5.0, 9.0, 2.0], "b": [0.5, 0.2, 0.3]}),
    ],
)
def test_named_compounds_are_the_loss_plus_cross_entropy(compound: type, loss_class: type, extra: dict) -> None:
    logits, labels = _batch(seed=3)
    kwargs: dict[str, Any] = dict(to_onehot_y=True, softmax=True, include_background=False, **extra)
    ours = compound(lambda_ce=0.7, lambda_overlap=1.5, **kwargs)
    assert isinstance(ours.loss, loss_class)
    got, got_grad = _value_and_grad(ours, logits, labels)

    def reference(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 1.5 * loss_class(**kwargs)(x, t) + 0.7 * F.cross_entropy(x, t[:, 0])

    expected, expected_grad = _value_and_grad(reference, logits, labels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-7)


def test_every_registered_name_takes_plus_ce_and_a_user_loss_too() -> None:
    logits, labels = _batch(seed=4)

    @register_loss("test_l1_prob")
    class L1(nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return (torch.softmax(x, 1) - F.one_hot(t[:, 0], x.shape[1]).movedim(-1, 1)).abs().mean()

    try:
        compound = get_loss("test_l1_prob+ce", lambda_ce=0.5)
        assert isinstance(compound, CompoundCELoss) and isinstance(compound.loss, L1)
        expected = L1()(logits, labels) + 0.5 * F.cross_entropy(logits, labels[:, 0])
        torch.testing.assert_close(compound(logits, labels), expected)
    finally:
        _REGISTRY.pop("test_l1_prob")
    with pytest.raises(KeyError, match="unknown loss 'ce\\+ce'"):
        get_loss("ce+ce")
    with pytest.raises(KeyError, match="unknown loss 'nope\\+ce'"):
        get_loss("nope+ce")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="reduces with 'mean' or 'sum'"):
        get_loss("dice+ce", reduction="none")
    with pytest.raises(ValueError, match=">= 0"):
        SoftDiceCELoss(lambda_ce=-1.0)
    with pytest.raises(ValueError, match="not both"):
        SoftDiceCELoss(lambda_overlap=2.0, lambda_dice=0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftDiceCELoss(label_smoothing=1.5)


def test_adaptive_mime_inside_a_compound_moves_its_averages_and_saves_them() -> None:
    logits, labels = _batch(seed=5)
    kwargs: dict[str, Any] = dict(
        a=[1.0, 5.0, 9.0], b=[1.0, 0.5, 0.2], include_background=False, to_onehot_y=True, softmax=True
    )
    compound = AdaptiveMimeCELoss(momentum=0.5, **kwargs)
    alone = AdaptiveMimeLoss(momentum=0.5, **kwargs)
    for _ in range(3):
        x = logits.clone().requires_grad_()
        value = compound(x, labels)
        value.backward()
        torch.testing.assert_close(
            value, alone(logits.clone().requires_grad_(), labels) + F.cross_entropy(logits, labels[:, 0])
        )
    state = compound.state_dict()
    assert {"loss.running_intersection", "loss.running_union", "loss.initial_a", "loss.initial_b"} <= set(state)
    torch.testing.assert_close(state["loss.running_union"], alone.running_union)
    restored = AdaptiveMimeCELoss(momentum=0.5, **kwargs)
    restored.load_state_dict(state)
    compound.eval()
    restored.eval()
    assert not restored.loss.training
    torch.testing.assert_close(restored(logits, labels), compound(logits, labels))


def test_mime_compounds_from_statistics_and_the_bundle() -> None:
    labels = [torch.randint(0, 3, (1, 16, 16), generator=torch.Generator().manual_seed(i)).numpy() for i in range(3)]
    stats = ClassStatistics.from_labels(labels, num_classes=3)
    by_name = get_loss("mime_adaptive+ce", stats=stats, softmax=True, to_onehot_y=True, lambda_ce=0.5)
    alone = get_loss("mime_adaptive", stats=stats, softmax=True, to_onehot_y=True)
    assert isinstance(by_name.loss, AdaptiveMimeLoss) and by_name.lambda_ce == 0.5
    torch.testing.assert_close(by_name.loss.a, alone.a)
    by_class = MimeCELoss.from_statistics(stats, include_background=False, softmax=True, to_onehot_y=True)
    assert isinstance(by_class.loss, MimeLoss) and by_class.loss.a.numel() == 2
    config = {
        "loss": {
            "_target_": "monai_mime.MimeCELoss",
            "a": [0.5, 20.0, 80.0],
            "b": [0.5, 0.5, 1.0],
            "softmax": True,
            "to_onehot_y": True,
            "lambda_ce": 0.5,
        },
        "by_name": {"_target_": "monai_mime.get_loss", "name": "vnet+ce", "softmax": True, "to_onehot_y": True},
    }
    parser = ConfigParser(config)
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, MimeCELoss) and isinstance(loss.loss, MimeLoss) and loss.lambda_ce == 0.5
    assert loss.loss.a.tolist() == [0.5, 20.0, 80.0]
    from_config = parser.get_parsed_content("by_name")
    assert isinstance(from_config, CompoundCELoss) and isinstance(from_config.loss, VNetDiceLoss)
    assert torch.isfinite(loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8))))


def test_a_named_mime_compound_from_statistics_is_of_its_class() -> None:
    labels = [torch.randint(0, 3, (1, 16, 16), generator=torch.Generator().manual_seed(i)).numpy() for i in range(3)]
    stats = ClassStatistics.from_labels(labels, num_classes=3)
    compound = AdaptiveMimeCELoss.from_statistics(stats, patch_size=(8, 8), lambda_ce=0.25, to_onehot_y=True)
    assert type(compound) is AdaptiveMimeCELoss and compound.lambda_ce == 0.25
    loss = compound.loss
    assert isinstance(loss, AdaptiveMimeLoss) and float(loss.reference_voxels) == 64
    a, _ = stats.weights(patch_size=(8, 8))
    torch.testing.assert_close(loss.initial_a, torch.tensor(a, dtype=torch.float32))


def test_the_registry_records_what_each_loss_needs() -> None:
    from monai_mime.registry import registered_loss

    assert registered_loss("mime").from_statistics is not None
    assert registered_loss("mime_adaptive+ce").from_statistics is not None  # the wrapped loss's record
    assert registered_loss("dice").from_statistics is None and registered_loss("dice").monai_arguments
    assert not registered_loss("ce").monai_arguments
    with pytest.raises(TypeError, match="takes no stats="):
        get_loss("dice", stats=None)
