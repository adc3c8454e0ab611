"""Empty patches, the point of the paper: every loss gives a finite value and finite gradients on all-background
batches, batches where a class is missing from one sample, and single voxels, in float32 and under autocast."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_mime import get_loss

LOSSES = ["dice", "vnet", "gdl", "mime"]
#: every loss of the property test: the adaptive Mime too, and each with cross-entropy ("X+ce")
ALL_LOSSES = [*LOSSES, "mime_adaptive"] + [f"{name}+ce" for name in [*LOSSES, "mime_adaptive"]]


def _build(name: str, num_classes: int, include_background: bool, **kwargs: Any) -> torch.nn.Module:
    if name.removesuffix("+ce").startswith("mime"):
        n = num_classes if include_background else num_classes - 1
        kwargs.update(a=[80.0] * n, b=[1.0] * n)
    if name.removesuffix("+ce") == "mime_adaptive":
        kwargs.update(momentum=0.5)  # the averages move far within a few steps
    return get_loss(name, include_background=include_background, **kwargs)


def _labels(kind: str, b: int, k: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    labels = torch.randint(0, k, (b, 1, *shape), generator=generator)
    if kind == "background":
        return torch.zeros_like(labels)
    if kind == "missing":  # the last class missing from the first sample
        labels[0] = labels[0].clamp_max(k - 2)
    return labels


def _mask(kind: str, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
    """``None``, a random ``(B, 1, *spatial)`` mask, or one that keeps no voxel."""
    if kind == "none":
        return None
    if kind == "empty":
        return torch.zeros_like(labels, dtype=torch.bool)
    return torch.rand(labels.shape, generator=generator) < 0.5


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(ALL_LOSSES),
    kind=st.sampled_from(["background", "missing", "random"]),
    num_classes=st.integers(2, 5),
    batch_size=st.integers(1, 3),
    shape=st.sampled_from([(1, 1), (1, 1, 1), (4, 3), (2, 3, 2), (9, 9)]),
    include_background=st.booleans(),
    batch=st.booleans(),
    activation=st.sampled_from(["softmax", "sigmoid"]),
    precision=st.sampled_from(["float32", "bfloat16-autocast"]),
    scale=st.sampled_from([0.0, 1.0, 30.0]),
    ignore=st.sampled_from(["none", "some", "all"]),
    mask=st.sampled_from(["none", "random", "empty"]),
    training_steps=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_finite_loss_and_gradients_on_any_patch(
    name: str,
    kind: str,
    num_classes: int,
    batch_size: int,
    shape: tuple[int, ...],
    include_background: bool,
    batch: bool,
    activation: str,
    precision: str,
    scale: float,
    ignore: str,
    mask: str,
    training_steps: int,
    seed: int,
) -> None:
    """Any loss (``X+ce`` too), ignored voxels (some or all, by ``ignore_index`` = K), a mask (random or keeping
    nothing), float32 or bfloat16 autocast; the adaptive Mime after ``training_steps`` training steps on random
    batches, then this (possibly empty) batch."""
    generator = torch.Generator().manual_seed(seed)
    kwargs: dict[str, Any] = dict(to_onehot_y=True, batch=batch, **{activation: True})
    if ignore != "none":
        kwargs["ignore_index"] = num_classes
    loss_fn = _build(name, num_classes, include_background, **kwargs)

    def loss_of(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "float32"):
            x = (logits.movedim(1, -1) @ torch.eye(num_classes)).movedim(-1, 1)  # bfloat16 under autocast
            return loss_fn(x, labels, mask=mask)

    for _ in range(training_steps if "mime_adaptive" in name else 0):  # training mode: each step moves the averages
        warm = torch.randn(batch_size, num_classes, *shape, generator=generator).requires_grad_()
        loss_of(warm, torch.randint(0, num_classes, (batch_size, 1, *shape), generator=generator), None).backward()
    logits = (torch.randn(batch_size, num_classes, *shape, generator=generator) * scale).requires_grad_()
    labels = _labels(kind, batch_size, num_classes, shape, generator)
    if ignore == "all":
        labels.fill_(num_classes)
    elif ignore == "some":
        labels[torch.rand(labels.shape, generator=generator) < 0.3] = num_classes
    loss = loss_of(logits, labels, _mask(mask, labels, generator))
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss).all(), (name, kind, loss)
    assert torch.isfinite(grad).all(), (name, kind)
    for buffer in loss_fn.buffers():  # the adaptive Mime's averages and a/b stay finite
        assert torch.isfinite(buffer).all(), (name, buffer)


@pytest.mark.parametrize("name", LOSSES)
def test_all_background_patch_with_confident_background_prediction_is_near_the_optimum(name: str) -> None:
    """On an empty patch that is predicted empty, the Dice variants sit at ~0 and Mime at its minimum; predicting
    foreground there is worse for every loss (a gradient that points back to background)."""
    logits = torch.zeros(2, 3, 8, 8)
    logits[:, 0] = 20.0
    labels = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    loss_fn = _build(name, 3, include_background=False, softmax=True, to_onehot_y=True)
    good = loss_fn(logits, labels)
    bad_logits = logits.clone()
    bad_logits[:, 1, :4] = 40.0
    assert loss_fn(bad_logits, labels) > good + 1e-3


@pytest.mark.cuda
@pytest.mark.parametrize("name", LOSSES)
def test_float16_autocast_on_cuda_is_finite(name: str) -> None:
    logits = torch.randn(2, 4, 32, 32, device="cuda", requires_grad=True)
    labels = torch.zeros(2, 1, 32, 32, dtype=torch.long, device="cuda")
    loss_fn = _build(name, 4, include_background=False, softmax=True, to_onehot_y=True).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        loss = loss_fn(torch.nn.functional.conv2d(logits, torch.eye(4, device="cuda").view(4, 4, 1, 1)), labels)
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(grad).all()
