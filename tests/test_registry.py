"""Registry, MONAI bundle configs, torch.compile and device moves."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from monai.bundle import ConfigParser
from torch import nn

from monai_mime import (
    GeneralizedSoftDiceLoss,
    MimeLoss,
    SoftDiceLoss,
    VNetDiceLoss,
    get_loss,
    list_losses,
    register_loss,
)
from monai_mime.registry import _REGISTRY


def test_builtin_names() -> None:
    assert {"dice", "vnet", "gdl", "mime", "ce"} <= set(list_losses())
    assert isinstance(get_loss("dice", softmax=True), SoftDiceLoss)
    assert isinstance(get_loss("vnet"), VNetDiceLoss)
    assert isinstance(get_loss("gdl", w_type="simple"), GeneralizedSoftDiceLoss)
    mime = get_loss("mime", a=[1.0, 2.0], b=[3.0, 4.0], softmax=True)
    assert isinstance(mime, MimeLoss) and mime.b.tolist() == [3.0, 4.0]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(
        KeyError, match="unknown loss 'dcie'; registered losses: ce, dice, gdl, mime, mime_adaptive, vnet"
    ):
        get_loss("dcie")


def test_register_a_user_loss_and_refuse_a_duplicate() -> None:
    @register_loss("test_l1")
    class L1(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (x - y).abs().mean()

    try:
        assert isinstance(get_loss("test_l1"), L1)
        with pytest.raises(ValueError, match="already registered"):
            register_loss("test_l1")(L1)
    finally:
        _REGISTRY.pop("test_l1")


def test_bundle_config_instantiates_mime_by_its_dotted_path() -> None:
    config = {
        "num_classes": 3,
        "loss": {
            "_target_": "monai_mime.MimeLoss",
            "a": [0.5, 20.0, 80.0],
            "b": [0.5, 0.5, 1.0],
            "softmax": True,
            "to_onehot_y": True,
        },
        "gdl": {"_target_": "monai_mime.GeneralizedSoftDiceLoss", "softmax": True, "to_onehot_y": True},
    }
    parser = ConfigParser(config)
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, MimeLoss) and loss.a.tolist() == [0.5, 20.0, 80.0]
    assert isinstance(parser.get_parsed_content("gdl"), GeneralizedSoftDiceLoss)
    value = loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8)))
    assert torch.isfinite(value)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mime", "dice", "vnet", "gdl", "mime+ce", "dice+ce"])
def test_torch_compile_matches_eager(name: str) -> None:
    kwargs: dict[str, Any] = dict(softmax=True, to_onehot_y=True, validate=False)
    if name.startswith("mime"):
        kwargs.update(a=[1.0, 20.0, 40.0], b=[1.0, 1.0, 1.0])
    loss = get_loss(name, **kwargs)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=False)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 8, 8))
    (eager_grad,) = torch.autograd.grad(loss(logits, labels), logits)
    value = compiled(logits, labels)
    (compiled_grad,) = torch.autograd.grad(value, logits)
    torch.testing.assert_close(value, loss(logits, labels))
    torch.testing.assert_close(compiled_grad, eager_grad)


@pytest.mark.cuda
def test_mime_moves_to_cuda_with_its_buffers() -> None:
    loss = MimeLoss([1.0, 2.0], [1.0, 1.0], softmax=True, to_onehot_y=True).cuda()
    assert loss.a.device.type == "cuda"
    logits = torch.randn(2, 2, 8, 8, device="cuda", requires_grad=True)
    value = loss(logits, torch.randint(0, 2, (2, 1, 8, 8), device="cuda"))
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
