"""MONAI's deep supervision: ``monai.losses.DeepSupervisionLoss`` around every loss of the registry.

MONAI's wrapper takes a list or tuple of outputs (DynUNet's stacked training output unbound along dim 1), resizes
the target to each output with nearest-exact interpolation (so the target is a float label map) and sums the
per-output losses with weights 1, 1/2, 1/4, ... The adaptive Mime, shared by the outputs, must then give each
output the weights of its own size, as it does in nnU-Net (tests/test_losses_adaptive_scales.py).
"""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss
from monai.networks.nets import DynUNet
from torch import nn

from monai_mime import AdaptiveMimeLoss, get_loss, list_losses

K = 3
MIME = {"a": [1.0, 6.0, 9.0], "b": [0.8, 0.3, 0.2]}
NAMES = list_losses() + [name + "+ce" for name in list_losses() if name != "ce"]


def _loss(name: str) -> nn.Module:
    extra: dict[str, Any] = dict(MIME) if name.startswith("mime") else {}
    return get_loss(name, softmax=True, to_onehot_y=True, **extra)


def _deep_supervision(loss: nn.Module) -> DeepSupervisionLoss:
    """MONAI's wrapper; its annotation asks for its own ``_Loss`` base class, any loss module runs in it."""
    return DeepSupervisionLoss(cast(Any, loss))


def _pyramid(seed: int, size: int = 16) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, K, (2, 1, size, size), generator=g).float()
    outputs = [torch.randn(2, K, size // s, size // s, generator=g) for s in (1, 2, 4)]
    return outputs, target


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("container", [list, tuple])
def test_deep_supervision_loss_is_the_weighted_sum_of_the_per_output_losses(name: str, container: type) -> None:
    outputs, target = _pyramid(seed=0)
    loss = _loss(name)
    reference = copy.deepcopy(loss)  # the adaptive Mime's averages move at every call: a twin, called in order
    inputs = [o.clone().requires_grad_() for o in outputs]
    value = _deep_supervision(loss)(container(inputs), target)
    value.backward()
    expected = sum(
        w * reference(o, F.interpolate(target, size=o.shape[2:], mode="nearest-exact"))
        for w, o in zip((1.0, 0.5, 0.25), outputs)
    )
    assert isinstance(expected, torch.Tensor)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    for x in inputs:
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_dynunet_stacked_training_output_unbound_along_dim_1(name: str) -> None:
    torch.manual_seed(0)
    net = DynUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=K,
        kernel_size=[3, 3, 3],
        strides=[1, 2, 2],
        upsample_kernel_size=[2, 2],
        filters=[4, 8, 16],
        deep_supervision=True,
        deep_supr_num=1,
    ).train()
    image, target = torch.randn(2, 1, 16, 16), torch.randint(0, K, (2, 1, 16, 16)).float()
    stacked = net(image)
    assert stacked.shape == (2, 2, K, 16, 16)
    value = _deep_supervision(_loss(name))(list(torch.unbind(stacked, dim=1)), target)
    value.backward()
    grads = [p.grad for p in net.parameters()]
    assert torch.isfinite(value) and all(g is not None and torch.isfinite(g).all() for g in grads)


def _disc_batch(g: torch.Generator, step: int, steps: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with a large and a small disc; logits that fit them better as ``step`` grows, plus noise."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(4, 1, size, size)
    for image in range(4):
        cy, cx, r = torch.randint(16, 48, (3,), generator=g).tolist()
        labels[image, 0][(yy - cy) ** 2 + (xx - cx) ** 2 < (r // 2 + 6) ** 2] = 1
        cy, cx = torch.randint(8, 56, (2,), generator=g).tolist()
        labels[image, 0][(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = 2
    signal = 4.0 * step / steps * F.one_hot(labels[:, 0].long(), K).movedim(-1, 1).float()
    return signal, labels


def test_adaptive_mime_inside_deep_supervision_gives_each_output_its_own_size_weights() -> None:
    """One adaptive Mime shared by three outputs (full, 1/2, 1/4 per side) in DeepSupervisionLoss: each output's
    gradient and ``a`` match those of a loss trained on that output alone within 1.5x (the bound of the nnU-Net
    pyramid test)."""
    g = torch.Generator().manual_seed(1)
    kwargs: dict[str, Any] = dict(include_background=False, softmax=True, to_onehot_y=True, momentum=0.9)
    shared = AdaptiveMimeLoss([0.02, 0.05], [0.004, 0.002], **kwargs)
    single = [AdaptiveMimeLoss([0.02, 0.05], [0.004, 0.002], **kwargs) for _ in range(3)]
    wrapper = _deep_supervision(shared)
    steps = 120
    for step in range(steps):
        signal, labels = _disc_batch(g, step, steps)
        outputs = [(F.avg_pool2d(signal, s) if s > 1 else signal) for s in (1, 2, 4)]
        outputs = [o + torch.randn(o.shape, generator=g) for o in outputs]
        wrapper(outputs, labels)
        for own, o in zip(single, outputs):
            own(o, F.interpolate(labels, size=o.shape[2:], mode="nearest-exact"))
    shared.eval()
    signal, labels = _disc_batch(g, steps, steps)
    for own, s in zip(single, (1, 2, 4)):
        output = (F.avg_pool2d(signal, s) if s > 1 else signal) + torch.randn(signal[..., ::s, ::s].shape, generator=g)
        target = F.interpolate(labels, size=output.shape[2:], mode="nearest-exact")
        gradients = []
        for loss in (shared, own.eval()):
            x = output.clone().requires_grad_()
            (grad,) = torch.autograd.grad(loss(x, target), x)
            gradients.append(grad.norm())
        assert 1 / 1.5 < float(gradients[0] / gradients[1]) < 1.5, (s, gradients)
        assert all(1 / 1.5 < r < 1.5 for r in (shared.a / own.a).tolist()), (s, shared.a, own.a)
