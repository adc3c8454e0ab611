"""The shared sums I, P, G: label-map path against the dense one-hot path, gradients, precision."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.functional import one_hot

from monai_mime.losses.sums import Activation, bucket_sums, dense_sums, label_map_sums

ACTIVATIONS = ["softmax", "sigmoid", "none"]


def _case(activation: str, dtype: torch.dtype = torch.float64, b: int = 2, k: int = 3, n: int = 30):
    x = torch.rand(b, k, n, dtype=dtype) if activation == "none" else torch.randn(b, k, n, dtype=dtype) * 3
    labels = torch.randint(0, k, (b, n))
    valid = (torch.rand(b, n) > 0.3).to(dtype)
    return x.requires_grad_(), labels, valid


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_label_map_sums_equal_the_definition(activation: Activation, squared: bool, masked: bool) -> None:
    x, labels, valid = _case(activation)
    mask = valid if masked else None
    s = {"softmax": torch.softmax(x, 1), "sigmoid": torch.sigmoid(x), "none": x}[activation]
    y = one_hot(labels, 3).permute(0, 2, 1).to(x.dtype)
    v = (valid if masked else torch.ones_like(valid)).unsqueeze(1)
    expected = ((v * y * s).sum(-1), (v * (s * s if squared else s)).sum(-1), (v * y).sum(-1))
    got = label_map_sums(x, labels, mask, activation, squared)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    dense = dense_sums(x, y, mask, activation, squared)
    for g, e in zip(dense, expected):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_backward_passes_gradcheck(activation: Activation, squared: bool, masked: bool) -> None:
    x, labels, valid = _case(activation)
    mask = valid if masked else None
    assert gradcheck(lambda z: tuple(label_map_sums(z, labels, mask, activation, squared)[:2]), (x,))
    y = one_hot(labels, 3).permute(0, 2, 1).to(x.dtype)
    assert gradcheck(lambda z: tuple(dense_sums(z, y, mask, activation, squared)[:2]), (x,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_accumulate_in_float32(dtype: torch.dtype) -> None:
    x, labels, _ = _case("softmax", dtype=torch.float32, b=2, k=4, n=70_000)
    half = x.detach().to(dtype).requires_grad_()
    sums = label_map_sums(half, labels)
    reference = label_map_sums(half.detach().float(), labels)
    assert all(t.dtype == torch.float32 for t in sums)
    # accumulated in float32 from the same half-precision logits: equal to float32 rounding, far below bf16's 2^-8
    for got, expected in zip(sums, reference):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)
    (grad,) = torch.autograd.grad(sums.intersection.sum() - sums.prediction.sum(), half)
    assert grad.dtype == dtype and torch.isfinite(grad).all()


def test_sums_under_cpu_autocast_stay_float32() -> None:
    x, labels, _ = _case("softmax", dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = torch.nn.functional.conv1d(x, torch.eye(3).unsqueeze(-1))  # a bf16 output, as a network gives
        sums = label_map_sums(logits, labels)
    assert logits.dtype == torch.bfloat16
    assert all(t.dtype == torch.float32 for t in sums)
    torch.testing.assert_close(sums.prediction.sum(), torch.tensor(60.0), rtol=1e-5, atol=1e-4)


def test_ground_truth_count_is_the_label_bincount_and_takes_no_gradient() -> None:
    x, labels, _ = _case("softmax")
    sums = label_map_sums(x, labels)
    expected = torch.stack([torch.bincount(row, minlength=3) for row in labels]).to(sums.ground_truth)
    torch.testing.assert_close(sums.ground_truth, expected)
    assert not sums.ground_truth.requires_grad


def test_backward_twice_with_retain_graph_gives_the_same_gradient() -> None:
    x, labels, valid = _case("softmax")
    sums = label_map_sums(x, labels, valid)
    loss = (sums.intersection * 2 - sums.prediction).sum()
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(first, second)


def test_fused_backward_leaves_the_logits_untouched() -> None:
    x, labels, _ = _case("none", dtype=torch.float32)
    before = x.detach().clone()
    (grad,) = torch.autograd.grad(label_map_sums(x, labels, activation="none").prediction.sum(), x)
    torch.testing.assert_close(x.detach(), before)
    torch.testing.assert_close(grad, torch.ones_like(grad))


def test_bucket_sums_on_coherent_background_dominated_labels() -> None:
    """Long runs of one label (realistic maps) and absent classes: the per-(image, class) sums are exact."""
    labels = torch.zeros(2, 5000, dtype=torch.long)
    labels[0, 1000:1300] = 2
    labels[1, 4000:] = 1
    values = torch.rand(2, 5000, dtype=torch.float64)
    expected = torch.stack([torch.stack([values[b][labels[b] == k].sum() for k in range(4)]) for b in range(2)])
    torch.testing.assert_close(bucket_sums(labels, values, 4), expected)
    counts = bucket_sums(labels, None, 4)
    assert counts.dtype == torch.float32 and counts.tolist() == [[4700, 0, 300, 0], [4000, 1000, 0, 0]]
