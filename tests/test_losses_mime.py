"""Mime (Eq. 3): the exact linear map, its gradient ω, the a/b buffers and the reductions."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.functional import one_hot

from monai_mime import MimeLoss

A = [0.5, 20.0, 80.0]
B = [0.25, 0.5, 1.5]


def _omega(labels: torch.Tensor, a: list[float], b: list[float]) -> torch.Tensor:
    """ω = −a_k on the ground truth of class k, +b_k elsewhere, shape (B, K, *spatial)."""
    y = one_hot(labels[:, 0], len(a)).movedim(-1, 1).double()
    a_, b_ = (torch.tensor(v, dtype=torch.float64).view(1, -1, *[1] * (labels.ndim - 2)) for v in (a, b))
    return -a_ * y + b_ * (1 - y)


@pytest.mark.parametrize("spatial", [(7, 5), (3, 4, 5)])
def test_sum_is_exactly_sum_of_omega_s_and_its_gradient_is_omega(spatial: tuple[int, ...]) -> None:
    probs = torch.softmax(torch.randn(2, 3, *spatial, dtype=torch.float64), 1).requires_grad_()
    labels = torch.randint(0, 3, (2, 1, *spatial))
    loss = MimeLoss(A, B, to_onehot_y=True, reduction="sum")(probs, labels)
    omega = _omega(labels, A, B)
    torch.testing.assert_close(loss.double(), (omega * probs).sum())
    (grad,) = torch.autograd.grad(loss, probs)
    torch.testing.assert_close(grad, omega)


def test_mean_divides_the_sum_by_the_number_of_image_class_terms_and_none_returns_them() -> None:
    probs = torch.rand(4, 3, 6, 6)
    labels = torch.randint(0, 3, (4, 1, 6, 6))
    total = MimeLoss(A, B, to_onehot_y=True, reduction="sum")(probs, labels)
    mean = MimeLoss(A, B, to_onehot_y=True, reduction="mean")(probs, labels)
    terms = MimeLoss(A, B, to_onehot_y=True, reduction="none")(probs, labels)
    torch.testing.assert_close(mean, total / 12)
    assert terms.shape == (4, 3, 1, 1)
    torch.testing.assert_close(terms.sum(), total)
    omega = _omega(labels, A, B).float()
    torch.testing.assert_close(terms[:, :, 0, 0], (omega * probs).sum((2, 3)))


def test_logit_gradient_is_the_softmax_jacobian_applied_to_omega() -> None:
    logits = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 5, 5))
    (grad,) = torch.autograd.grad(
        MimeLoss(A, B, softmax=True, to_onehot_y=True, reduction="sum")(logits, labels), logits
    )
    s = torch.softmax(logits.detach(), 1)
    omega = _omega(labels, A, B)
    torch.testing.assert_close(grad, s * (omega - (s * omega).sum(1, keepdim=True)))


def test_include_background_false_takes_k_minus_1_weights_and_skips_class_0() -> None:
    probs = torch.rand(2, 3, 4, 4, dtype=torch.float64).requires_grad_()
    labels = torch.randint(0, 3, (2, 1, 4, 4))
    loss = MimeLoss(A[1:], B[1:], to_onehot_y=True, include_background=False, reduction="sum")(probs, labels)
    (grad,) = torch.autograd.grad(loss, probs)
    omega = _omega(labels, A, B)
    torch.testing.assert_close(grad[:, 0], torch.zeros_like(grad[:, 0]))
    torch.testing.assert_close(grad[:, 1:], omega[:, 1:])


def test_ignore_index_voxels_take_no_part() -> None:
    probs = torch.rand(1, 3, 5, 5, dtype=torch.float64).requires_grad_()
    labels = torch.randint(0, 3, (1, 1, 5, 5))
    labels[0, 0, :2] = 255
    loss = MimeLoss(A, B, to_onehot_y=True, reduction="sum", ignore_index=255)(probs, labels)
    (grad,) = torch.autograd.grad(loss, probs)
    assert (grad[0, :, :2] == 0).all()
    omega = _omega(labels.clamp_max(2), A, B)
    torch.testing.assert_close(grad[0, :, 2:], omega[0, :, 2:])
    torch.testing.assert_close(loss.double(), (omega * probs)[..., 2:, :].sum())


def test_soft_labels_give_the_same_linear_map() -> None:
    probs = torch.rand(2, 3, 4, 4, dtype=torch.float64).requires_grad_()
    target = torch.softmax(torch.randn(2, 3, 4, 4, dtype=torch.float64), 1)
    loss = MimeLoss(A, B, reduction="sum")(probs, target)
    a, b = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (A, B))
    omega = -a * target + b * (1 - target)
    (grad,) = torch.autograd.grad(loss, probs)
    torch.testing.assert_close(grad, omega)


def test_a_b_are_buffers_that_follow_the_module() -> None:
    loss = MimeLoss(A, B, softmax=True, to_onehot_y=True)
    state = loss.state_dict()
    assert set(state) == {"a", "b"}
    torch.testing.assert_close(state["a"], torch.tensor(A))
    other = MimeLoss([1.0] * 3, [1.0] * 3)
    other.load_state_dict(state)
    torch.testing.assert_close(other.b, torch.tensor(B))
    assert loss.to(torch.float64).a.dtype == torch.float64
    assert not loss.a.requires_grad


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_gradcheck(activation: str) -> None:
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 4, 5))
    loss = MimeLoss(A, B, to_onehot_y=True, **{activation: True})
    assert gradcheck(lambda x: loss(x, labels), (logits,))


def test_batch_sums_terms_over_the_batch() -> None:
    probs = torch.rand(3, 3, 4, 4)
    labels = torch.randint(0, 3, (3, 1, 4, 4))
    per_image = MimeLoss(A, B, to_onehot_y=True, reduction="none")(probs, labels)
    batched = MimeLoss(A, B, to_onehot_y=True, reduction="none", batch=True)(probs, labels)
    assert batched.shape == (3, 1, 1)
    torch.testing.assert_close(batched[:, 0, 0], per_image[:, :, 0, 0].sum(0))


def test_from_statistics_takes_the_weights_of_the_requested_mode() -> None:
    from monai_mime import ClassStatistics

    labels = [torch.randint(0, 3, (6, 6)).numpy() for _ in range(4)]
    stats = ClassStatistics.from_labels(labels, num_classes=3)
    a, b = stats.weights(mode="dice", overlap=0.5, patch_size=(4, 4))
    loss = MimeLoss.from_statistics(
        stats, mode="dice", patch_size=(4, 4), weight_kwargs={"overlap": 0.5}, include_background=False, softmax=True
    )
    torch.testing.assert_close(loss.a, torch.tensor(a[1:], dtype=torch.float32))
    torch.testing.assert_close(loss.b, torch.tensor(b[1:], dtype=torch.float32))
    assert loss.softmax and not loss.include_background
