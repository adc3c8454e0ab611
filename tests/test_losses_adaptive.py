"""AdaptiveMimeLoss: Eq. 2 at running per-voxel averages of the sums, inside the linear map of Eq. 3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _adaptive_reference import Eq2Reference

from monai_mime import AdaptiveMimeLoss, ClassStatistics, MimeLoss, get_loss


def test_starts_with_the_given_weights_at_the_reference_size() -> None:
    a, b = [3.0, 0.3], [1.0, 0.1]
    loss = AdaptiveMimeLoss(a, b, reference_voxels=64)
    torch.testing.assert_close(loss.a, torch.tensor(a))
    torch.testing.assert_close(loss.b, torch.tensor(b))
    # the operating point that gives them back through Eq. 2, kept as fractions of the 64 voxels
    union, intersection = 64 * loss.running_union, 64 * loss.running_intersection
    torch.testing.assert_close(2 * (union - intersection) / union**2, torch.tensor(a))
    torch.testing.assert_close(2 * intersection / union**2, torch.tensor(b))
    # Eq. 2 at four times the voxels: the same fractions give a quarter of the weights
    a4, b4 = loss.weights_at(256)
    torch.testing.assert_close(a4, torch.tensor(a) / 4)
    torch.testing.assert_close(b4, torch.tensor(b) / 4)


def test_the_first_call_sets_the_reference_size_when_none_is_given() -> None:
    loss = AdaptiveMimeLoss([0.2, 0.2], [0.1, 0.1], momentum=1.0, to_onehot_y=True)
    assert not loss.started
    with pytest.raises(RuntimeError, match="not known yet"):
        loss.weights_at(10)
    loss(torch.rand(2, 2, 6, 6), torch.randint(0, 2, (2, 1, 6, 6)))
    assert loss.started and float(loss.reference_voxels) == 36
    torch.testing.assert_close(loss.weights_at(36)[0], torch.tensor([0.2, 0.2]))
    stats = ClassStatistics.from_labels([torch.randint(0, 2, (1, 16, 16)).numpy()], num_classes=2)
    from_stats = AdaptiveMimeLoss.from_statistics(stats, patch_size=[8, 4])
    assert float(from_stats.reference_voxels) == 32


def test_weights_follow_equation_2_at_the_running_averages() -> None:
    loss = AdaptiveMimeLoss([1.0, 1.0], [1.0, 1.0], momentum=0.5, to_onehot_y=True, reference_voxels=36)
    reference = Eq2Reference([1.0, 1.0], [1.0, 1.0], voxels=36, momentum=0.5)
    for _ in range(3):
        probs = torch.rand(4, 2, 6, 6)
        labels = torch.randint(0, 2, (4, 1, 6, 6))
        loss(probs, labels)
        reference.observe(probs, labels)
        a, b = reference.weights_at(36)
        torch.testing.assert_close(loss.a.double(), a, rtol=1e-5, atol=0)
        torch.testing.assert_close(loss.b.double(), b, rtol=1e-5, atol=0)


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


def test_a_vanished_class_is_held_by_a_floor_that_means_the_same_at_every_size() -> None:
    """A rare class on 16² patches: its starting union is 0.3 voxels (below one voxel, where a floor in voxels would
    already change the starting a/b). Absent and not predicted for 200 steps, its running union decays below the floor
    ``min_union_share · ū₀``; ``a`` stops at ``2/(min_union_share · Ū₀)`` and scales as ``1/N`` at every size."""
    a0, b0 = torch.tensor([0.004, 6.45]), torch.tensor([0.004, 0.2])
    loss = AdaptiveMimeLoss(a0, b0, momentum=0.9, min_union_share=0.1, reference_voxels=256, to_onehot_y=True)
    start_union = 2 / (a0 + b0)
    assert start_union[1] < 1
    torch.testing.assert_close(loss.weights_at(256), (a0, b0))  # the starting weights are Eq. 2's, not floored
    probs = torch.zeros(4, 2, 16, 16)
    probs[:, 0] = 1.0
    labels = torch.zeros(4, 1, 16, 16, dtype=torch.long)
    for _ in range(200):
        loss(probs, labels)
    torch.testing.assert_close(256 * loss.min_running_union[1], 0.1 * start_union[1], rtol=1e-6, atol=0)
    assert loss.running_union[1] < loss.min_running_union[1]  # the average itself decays; Eq. 2 uses the floor
    a, b = loss.weights_at(256)
    torch.testing.assert_close(a[1], 2 / (0.1 * start_union[1]), rtol=1e-5, atol=0)
    assert float(b[1]) < 1e-6 and torch.isfinite(a).all()
    for voxels in (64, 1024, 32**3):
        torch.testing.assert_close(loss.weights_at(voxels)[0] * voxels, a * 256, rtol=1e-5, atol=0)


def test_eval_mode_and_momentum_one_freeze_the_weights() -> None:
    probs, labels = torch.rand(2, 2, 4, 4), torch.randint(0, 2, (2, 1, 4, 4))
    frozen = AdaptiveMimeLoss([0.2, 0.2], [0.1, 0.1], momentum=1.0, to_onehot_y=True)
    evaluating = AdaptiveMimeLoss([0.2, 0.2], [0.1, 0.1], momentum=0.5, to_onehot_y=True).eval()
    plain = MimeLoss([0.2, 0.2], [0.1, 0.1], to_onehot_y=True)
    for loss in (frozen, evaluating):
        torch.testing.assert_close(loss(probs, labels), plain(probs, labels))
        torch.testing.assert_close(loss.a, torch.tensor([0.2, 0.2]))


def test_state_dict_carries_the_running_averages_and_the_reference_size() -> None:
    loss = AdaptiveMimeLoss([2.0, 2.0], [1.0, 1.0], momentum=0.5, to_onehot_y=True)
    loss(torch.rand(2, 2, 4, 4), torch.randint(0, 2, (2, 1, 4, 4)))
    restored = AdaptiveMimeLoss([1.0, 1.0], [1.0, 1.0])
    restored.load_state_dict(loss.state_dict())
    assert set(loss.state_dict()) == {
        "initial_a",
        "initial_b",
        "running_intersection",
        "running_union",
        "min_running_union",
        "reference_voxels",
    }
    for name, value in loss.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], value)
    torch.testing.assert_close(restored.weights_at(100), loss.weights_at(100))


def test_registry_and_bad_arguments() -> None:
    assert isinstance(get_loss("mime_adaptive", a=[1.0], b=[1.0]), AdaptiveMimeLoss)
    with pytest.raises(ValueError, match="momentum"):
        AdaptiveMimeLoss([1.0], [1.0], momentum=1.5)
    with pytest.raises(ValueError, match="reference_voxels"):
        AdaptiveMimeLoss([1.0], [1.0], reference_voxels=0)
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match="min_union_share"):
            AdaptiveMimeLoss([1.0], [1.0], min_union_share=share)
    loss = AdaptiveMimeLoss([1.0, 1.0], [1.0, 1.0], to_onehot_y=True)
    sums = loss.class_sums(torch.rand(2, 2, 4, 4), torch.randint(0, 2, (2, 1, 4, 4)))
    with pytest.raises(ValueError, match="needs num_voxels"):
        loss.loss_from_sums(sums)
    with pytest.raises(ValueError, match="a/b for 3 classes but the loss sees 2"):
        AdaptiveMimeLoss([1.0] * 3, [1.0] * 3).loss_from_sums(sums, num_voxels=16)


def test_a_loss_computed_without_gradients_does_not_move_the_weights() -> None:
    loss = AdaptiveMimeLoss([0.2, 0.2], [0.1, 0.1], momentum=0.5, to_onehot_y=True)
    with torch.no_grad():
        loss(torch.rand(2, 2, 4, 4), torch.randint(0, 2, (2, 1, 4, 4)))
    torch.testing.assert_close(loss.a, torch.tensor([0.2, 0.2]))


def test_several_calls_before_one_backward_like_deep_supervision() -> None:
    loss = AdaptiveMimeLoss([2.0, 2.0], [1.0, 1.0], momentum=0.5, softmax=True, to_onehot_y=True)
    reference = Eq2Reference([2.0, 2.0], [1.0, 1.0], voxels=64, momentum=0.5)  # the first call's size
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    labels = torch.randint(0, 2, (2, 1, 8, 8))
    total = loss(logits, labels) + 0.5 * loss(logits[..., ::2, ::2], labels[..., ::2, ::2])
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # both calls moved the averages, each with its own sums per voxel; the first call's graph kept its own a/b
    for x, y in ((logits, labels), (logits[..., ::2, ::2], labels[..., ::2, ::2])):
        reference.observe(torch.softmax(x, 1), y)
    for voxels in (64, 16):
        torch.testing.assert_close(
            loss.weights_at(voxels), reference.weights_at(voxels), rtol=1e-5, atol=0, check_dtype=False
        )


def test_batched_meta_tensors_from_a_monai_dataloader_update_the_averages() -> None:
    from monai.data import MetaTensor, list_data_collate

    samples = [
        {
            "x": MetaTensor(torch.randn(3, 8, 8), meta={"filename_or_obj": f"case{i}"}),
            "y": MetaTensor(torch.randint(0, 3, (1, 8, 8)), meta={"filename_or_obj": f"case{i}"}),
        }
        for i in range(2)
    ]
    batch = list_data_collate(samples)
    loss_fn = AdaptiveMimeLoss([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], softmax=True, to_onehot_y=True)
    logits = batch["x"].requires_grad_()
    loss = loss_fn(logits, batch["y"])
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None
    # the first call starts the averages at 64 voxels and folds this batch in (plain tensors for the reference)
    reference = Eq2Reference([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], voxels=64, momentum=loss_fn.momentum)
    reference.observe(torch.softmax(logits.as_tensor(), 1), batch["y"].as_tensor())
    torch.testing.assert_close(loss_fn.weights_at(64), reference.weights_at(64), rtol=1e-5, atol=0, check_dtype=False)


OLD_STATES = Path(__file__).parent / "data" / "adaptive_mime_state_v1.json"


def _old_state(entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {
        key: torch.tensor(value, dtype=torch.float64 if key == "reference_voxels" else torch.float32)
        for key, value in entry["state_dict"].items()
    }


def test_state_dicts_written_before_the_initial_weight_names_still_load() -> None:
    """``tests/data/adaptive_mime_state_v1.json`` was written by the code before issue 21, whose ``state_dict`` held
    ``a``, ``b`` (the last call's weights) instead of ``initial_a``, ``initial_b``; the weights it recorded are those
    that code computed from it."""
    saved = json.loads(OLD_STATES.read_text())
    x, y = torch.tensor(saved["input"]["x"]), torch.tensor(saved["input"]["y"])
    started = saved["started"]
    assert {"a", "b"} <= set(started["state_dict"])
    loss = AdaptiveMimeLoss([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], momentum=0.5, softmax=True, to_onehot_y=True)
    loss.load_state_dict(_old_state(started))
    assert float(loss.reference_voxels) == 64
    torch.testing.assert_close(loss.weights_at(64), tuple(torch.tensor(w) for w in started["weights_at_64"]))
    assert loss.eval()(x, y).item() == started["eval_loss_at_64"]
    # not yet called: its a/b were the starting weights, and the first call starts from them
    fresh = AdaptiveMimeLoss([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], momentum=0.5, softmax=True, to_onehot_y=True)
    fresh.load_state_dict(_old_state(saved["not_started"]))
    torch.testing.assert_close(fresh.initial_a, torch.tensor(saved["not_started"]["state_dict"]["a"]))
    fresh(x, y)
    expected = tuple(torch.tensor(w) for w in saved["not_started"]["weights_at_64_after_one_call"])
    torch.testing.assert_close(fresh.weights_at(64), expected)
    with pytest.raises(AttributeError, match="read-only"):
        fresh.a = torch.ones(3)
