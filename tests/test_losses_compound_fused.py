"""The one-pass compound (log-softmax, sums and cross-entropy in one Function) against the sum of the two terms."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.nn import functional as F

from monai_mime import CompoundCELoss, get_loss
from monai_mime.losses import ClassSumLoss
from monai_mime.losses.fused_ce import (
    LabelMapSumsCE,
    class_sums_and_cross_entropy,
    softmax_and_label_log_probability,
)

K = 4
IGNORE = K
MIME = {"a": [1.0, 6.0, 9.0, 3.0], "b": [0.8, 0.3, 0.2, 0.4]}
NAMES = ["dice", "vnet", "gdl", "mime", "mime_adaptive"]


def _overlap(name: str, **kwargs: object) -> nn.Module:
    """The loss ``name`` on label maps with softmax; Mime's a/b for all K classes unless given."""
    if name.startswith("mime") and "a" not in kwargs:
        kwargs.update(MIME)
    return get_loss(name, to_onehot_y=True, softmax=True, **kwargs)


def _data(seed: int, dtype: torch.dtype = torch.float32, ignore: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (2, 1, 6, 7, 5), generator=g)
    labels[1][labels[1] == 2] = 0  # class 2 missing from image 1
    if ignore:
        labels[:, :, :2] = IGNORE
    return (torch.randn(2, K, 6, 7, 5, generator=g) * 2).to(dtype), labels


def _grad(fn: object, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    value = fn(x)  # type: ignore[operator]
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("masked,smoothing", [(False, 0.0), (True, 0.1)])
def test_fused_equals_the_two_terms_apart(name: str, reduction: str, masked: bool, smoothing: float) -> None:
    x, labels = _data(seed=1, ignore=True)
    mask = (torch.rand(2, 1, 6, 7, 5, generator=torch.Generator().manual_seed(2)) > 0.3).float() if masked else None
    kw = dict(include_background=False, batch=name == "gdl", ignore_index=IGNORE, reduction=reduction)
    kw.update(_fg_weights(name))
    compound = CompoundCELoss(_overlap(name, **kw), lambda_ce=0.5, label_smoothing=smoothing)
    assert compound.fused(x, labels)
    got, got_grad = _grad(lambda v: compound(v, labels, mask), x)

    def reference(v: torch.Tensor) -> torch.Tensor:
        overlap = _overlap(name, **kw)(v, labels, mask=mask)
        per_voxel = F.cross_entropy(v, labels[:, 0], ignore_index=IGNORE, reduction="none", label_smoothing=smoothing)
        keep = (labels[:, 0] != IGNORE).float() * (1 if mask is None else mask[:, 0])
        ce = (per_voxel * keep).sum()
        return overlap + 0.5 * (ce / keep.sum() if reduction == "mean" else ce)

    expected, expected_grad = _grad(reference, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-6)
    assert float(got_grad[(labels == IGNORE).expand_as(got_grad)].abs().max()) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_fused_path_equals_the_unfused_path_on_one_hot_targets(name: str) -> None:
    """A one-hot target takes the unfused path (overlap loss + F.cross_entropy on probabilities): same numbers."""
    x, labels = _data(seed=3)
    one_hot = F.one_hot(labels[:, 0], K).movedim(-1, 1).float()
    fused = CompoundCELoss(_overlap(name), label_smoothing=0.05)
    unfused = CompoundCELoss(_dense(name), label_smoothing=0.05)
    assert fused.fused(x, labels) and not unfused.fused(x, one_hot)
    got, got_grad = _grad(lambda v: fused(v, labels), x)
    expected, expected_grad = _grad(lambda v: unfused(v, one_hot), x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-7)


def _dense(name: str) -> nn.Module:
    extra = MIME if name.startswith("mime") else {}
    return get_loss(name, softmax=True, **extra)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradcheck_float64(squared: bool, reduction: str) -> None:
    x, labels = _data(seed=4, dtype=torch.float64)
    x = x[:, :, :3, :3, :2].clone().requires_grad_()
    labels = labels[:, 0, :3, :3, :2].reshape(2, -1)
    valid = (torch.arange(labels.shape[1]) % 4 != 0).double().expand(2, -1)
    weights = torch.linspace(0.5, 2.0, 3 * K, dtype=torch.float64).reshape(3, K)

    def fn(v: torch.Tensor) -> torch.Tensor:
        i, p, _, ce = LabelMapSumsCE.apply(v.reshape(2, K, -1), labels, valid, squared, 0.1, reduction)
        return (weights[0] * i).sum() + (weights[1] * p).sum() + ((i + 1) / (p + 1)).sum() + 1.7 * ce

    assert gradcheck(fn, (x,))


@pytest.mark.parametrize("name", NAMES)
def test_empty_patches_are_finite(name: str) -> None:
    x, _ = _data(seed=5)
    background = torch.zeros(2, 1, 6, 7, 5, dtype=torch.long)
    compound = CompoundCELoss(_overlap(name, include_background=False, **_fg_weights(name)))
    value, grad = _grad(lambda v: compound(v, background), x)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    ignored = torch.full_like(background, IGNORE)
    compound = CompoundCELoss(_overlap(name, include_background=False, ignore_index=IGNORE, **_fg_weights(name)))
    value, grad = _grad(lambda v: compound(v, ignored), x)
    overlap_only, overlap_grad = _grad(lambda v: compound.loss(v, ignored), x)
    torch.testing.assert_close(value, overlap_only)  # no voxel left: the cross-entropy is 0, not NaN
    assert float(grad.abs().max()) == 0.0 and float(overlap_grad.abs().max()) == 0.0


def _fg_weights(name: str) -> dict[str, list[float]]:
    return {"a": MIME["a"][1:], "b": MIME["b"][1:]} if name.startswith("mime") else {}


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_autocast_and_float16_logits(name: str) -> None:
    x, labels = _data(seed=6)
    compound = CompoundCELoss(_overlap(name)).eval()  # AdaptiveMimeLoss: the same a/b for both calls
    full, full_grad = _grad(lambda v: compound(v, labels), x)
    half, half_grad = _grad(lambda v: compound(v, labels), x.half())
    assert half.dtype == torch.float32 and half_grad.dtype == torch.float16
    torch.testing.assert_close(half, full, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(half_grad.float(), full_grad, rtol=2e-2, atol=2e-5)
    conv = nn.Conv3d(K, K, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(x)
        value = compound(logits, labels)
    assert logits.dtype == torch.bfloat16 and value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_nothing_the_size_of_the_logits_is_saved_but_the_logits() -> None:
    x, labels = _data(seed=7)
    x.requires_grad_()
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        CompoundCELoss(_overlap("mime")).forward(x, labels)
    large = [t for t in saved if t.numel() >= x.numel()]
    assert large and all(t.data_ptr() == x.data_ptr() for t in large)


def test_fused_helper_refuses_what_it_cannot_fuse_and_restores_the_sums() -> None:
    x, labels = _data(seed=8)
    dense, loss = _dense("dice"), _overlap("dice")
    assert isinstance(dense, ClassSumLoss) and isinstance(loss, ClassSumLoss)
    with pytest.raises(ValueError, match="label-map target"):
        class_sums_and_cross_entropy(dense, x, F.one_hot(labels[:, 0], K).movedim(-1, 1).float())
    with pytest.raises(ValueError, match="label values"):
        class_sums_and_cross_entropy(loss, x, labels + 10)
    # after an error inside, the plain sums are back
    torch.testing.assert_close(loss(x, labels), get_loss("dice", to_onehot_y=True, softmax=True)(x, labels))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_label_log_probabilities_are_exact_where_the_probability_underflows(dtype: torch.dtype) -> None:
    """CPU path (softmax, one log per voxel, log_softmax where s_t underflows) == the log_softmax path == torch."""
    x, labels = _data(seed=9, dtype=dtype)
    x = x.reshape(2, K, -1)
    labels = labels.reshape(2, -1)
    x[0, :, :5] = torch.tensor([0.0, 120.0, -50.0, 3.0], dtype=dtype)[:, None] * (10 if dtype == torch.float64 else 1)
    labels[0, :5] = 2  # s_t = exp(-170) (float32) or exp(-1700) (float64): 0
    expected = torch.log_softmax(x, 1).gather(1, labels.unsqueeze(1)).squeeze(1)
    for exact_everywhere in (False, True):
        s, s_t, log_s_t = softmax_and_label_log_probability(x, labels, exact_everywhere)
        torch.testing.assert_close(log_s_t, expected)
        torch.testing.assert_close(s, torch.softmax(x, 1))
        torch.testing.assert_close(s_t, s.gather(1, labels.unsqueeze(1)).squeeze(1))
    assert float(s_t[0, :5].max()) < torch.finfo(dtype).tiny
    compound = CompoundCELoss(_overlap("dice"))
    ce = F.cross_entropy(x, labels)
    torch.testing.assert_close(
        compound(x.reshape(2, K, 6, 7, 5), labels.reshape(2, 1, 6, 7, 5))
        - compound.loss(x.reshape(2, K, 6, 7, 5), labels.reshape(2, 1, 6, 7, 5)),
        ce,
    )


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["dice", "vnet", "mime"])
def test_cuda_log_softmax_path_equals_the_cpu_path(name: str) -> None:
    """On a GPU the fused forward takes log_softmax over all channels: same value and gradient as on the CPU."""
    x, labels = _data(seed=10, ignore=True)
    compound = CompoundCELoss(_overlap(name, ignore_index=IGNORE), label_smoothing=0.1)
    cpu, cpu_grad = _grad(lambda v: compound(v, labels), x)
    compound.cuda()
    gpu, gpu_grad = _grad(lambda v: compound(v, labels.cuda()), x.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gpu_grad.cpu(), cpu_grad, rtol=1e-4, atol=1e-6)
