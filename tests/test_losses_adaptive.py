"""AdaptiveMimeLoss: Eq. 2 at running averages of the sums, inside the linear map of Eq. 3."""

from __future__ import annotations

import pytest
import torch

from monai_mime import AdaptiveMimeLoss, MimeLoss, get_loss


def test_starts_with_the_given_weights() -> None:
    a, b = [3.0, 0.3], [1.0, 0.1]
    loss = AdaptiveMimeLoss(a, b)
    torch.testing.assert_close(loss.a, torch.tensor(a))
    torch.testing.assert_close(loss.b, torch.tensor(b))
    # the operating point that gives them back through Eq. 2
    union, intersection = loss.running_union, loss.running_intersection
    torch.testing.assert_close(2 * (union - intersection) / union**2, torch.tensor(a))


def test_weights_follow_equation_2_at_the_running_averages() -> None:
    loss = AdaptiveMimeLoss([1.0, 1.0], [1.0, 1.0], momentum=0.5, to_onehot_y=True)
    probs = torch.rand(4, 2, 6, 6)
    labels = torch.randint(0, 2, (4, 1, 6, 6))
    start_u, start_i = loss.running_union.clone(), loss.running_intersection.clone()
    sums = loss.class_sums(probs, labels)
    loss(probs, labels)
    union = 0.5 * start_u + 0.5 * (sums.prediction + sums.ground_truth).mean(0)
    intersection = 0.5 * start_i + 0.5 * sums.intersection.mean(0)
    torch.testing.assert_close(loss.a, 2 * (union - intersection) / union**2)
    torch.testing.assert_close(loss.b, 2 * intersection / union**2)


def test_a_perfect_prediction_drives_the_ratio_to_one() -> None:
    loss = AdaptiveMimeLoss([30.0, 30.0], [0.1, 0.1], momentum=0.8, to_onehot_y=True)
    labels = torch.randint(0, 2, (2, 1, 8, 8))
    probs = torch.cat([(labels == 0), (labels == 1)], 1).float()
    for _ in range(100):
        loss(probs, labels)
    torch.testing.assert_close(loss.a / loss.b, torch.ones(2), rtol=1e-3, atol=1e-3)


def test_a_starved_class_gets_a_large_ratio() -> None:
    """Nothing predicted for class 1 (I = 0): b falls towards 0 and the push towards the ground truth dominates."""
    loss = AdaptiveMimeLoss([1.0, 1.0], [1.0, 1.0], momentum=0.5, to_onehot_y=True)
    labels = torch.ones(2, 1, 8, 8, dtype=torch.long)
    probs = torch.zeros(2, 2, 8, 8)
    probs[:, 0] = 1.0
    for _ in range(30):
        loss(probs, labels)
    assert (loss.a[1] / loss.b[1]).item() > 1e4
    assert torch.isfinite(loss.a).all() and (loss.b > 0).all()


def test_eval_mode_and_momentum_one_freeze_the_weights() -> None:
    probs, labels = torch.rand(2, 2, 4, 4), torch.randint(0, 2, (2, 1, 4, 4))
    frozen = AdaptiveMimeLoss([2.0, 2.0], [1.0, 1.0], momentum=1.0, to_onehot_y=True)
    evaluating = AdaptiveMimeLoss([2.0, 2.0], [1.0, 1.0], momentum=0.5, to_onehot_y=True).eval()
    plain = MimeLoss([2.0, 2.0], [1.0, 1.0], to_onehot_y=True)
    for loss in (frozen, evaluating):
        torch.testing.assert_close(loss(probs, labels), plain(probs, labels))
        torch.testing.assert_close(loss.a, torch.tensor([2.0, 2.0]))


def test_state_dict_carries_the_running_averages() -> None:
    loss = AdaptiveMimeLoss([2.0, 2.0], [1.0, 1.0], momentum=0.5, to_onehot_y=True)
    loss(torch.rand(2, 2, 4, 4), torch.randint(0, 2, (2, 1, 4, 4)))
    restored = AdaptiveMimeLoss([1.0, 1.0], [1.0, 1.0])
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.a, loss.a)
    torch.testing.assert_close(restored.running_union, loss.running_union)


def test_registry_and_bad_momentum() -> None:
    assert isinstance(get_loss("mime_adaptive", a=[1.0], b=[1.0]), AdaptiveMimeLoss)
    with pytest.raises(ValueError, match="momentum"):
        AdaptiveMimeLoss([1.0], [1.0], momentum=1.5)


def test_a_loss_computed_without_gradients_does_not_move_the_weights() -> None:
    loss = AdaptiveMimeLoss([2.0, 2.0], [1.0, 1.0], momentum=0.5, to_onehot_y=True)
    with torch.no_grad():
        loss(torch.rand(2, 2, 4, 4), torch.randint(0, 2, (2, 1, 4, 4)))
    torch.testing.assert_close(loss.a, torch.tensor([2.0, 2.0]))


def test_several_calls_before_one_backward_like_deep_supervision() -> None:
    loss = AdaptiveMimeLoss([2.0, 2.0], [1.0, 1.0], momentum=0.5, softmax=True, to_onehot_y=True)
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    labels = torch.randint(0, 2, (2, 1, 8, 8))
    total = loss(logits, labels) + 0.5 * loss(logits[..., ::2, ::2], labels[..., ::2, ::2])
    total.backward()
    assert torch.isfinite(logits.grad).all()
    assert "a" in dict(loss.named_buffers()) and not torch.equal(loss.a, torch.tensor([2.0, 2.0]))
