"""nnU-Net's "CE" trainers' loss: the adapter fuses the cross-entropy with the loss's sums, still nnU-Net's semantics.

* fused (``weight_ce=1``, no CE class weights) == unfused (nnU-Net's ``RobustCrossEntropyLoss`` beside the loss,
  forced here by all-one class weights) on a real network's deep-supervision outputs, with and without the ignore
  label and batch dice;
* label smoothing and an all-ignored batch as nnU-Net's ``DC_and_CE_loss``;
* half-precision logits and bfloat16 autocast of a real network (the loss sums in float32);
* DDP batch dice + CE with two ``gloo`` processes == nnU-Net's ``DC_and_CE_loss(MemoryEfficientSoftDiceLoss,
  ddp=True)`` on every rank, values and gradients.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunetv2.training.loss.compound_losses import DC_and_CE_loss  # noqa: E402
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss  # noqa: E402
from test_nnunet_losses import IGNORE, NUM_CLASSES, PATCH, A, B, _ds_targets, _label_maps, _network  # noqa: E402

from monai_mime import get_loss  # noqa: E402
from nnunet_trainers.losses import NnUNetLossAdapter, deep_supervision_weights, wrap_deep_supervision  # noqa: E402

torch.set_num_threads(1)


def _loss(name: str, batch: bool) -> torch.nn.Module:
    extra = {"a": A[1:], "b": B[1:]} if name == "mime" else {}
    return get_loss(name, include_background=False, to_onehot_y=True, softmax=True, batch=batch, **extra)


def _nnunet_dc_and_ce(batch_dice: bool, ignore_label: int | None, ddp: bool = False, **ce: float) -> DC_and_CE_loss:
    return DC_and_CE_loss(
        {"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": ddp},
        dict(ce),
        weight_ce=1,
        weight_dice=1,
        ignore_label=ignore_label,
        dice_class=MemoryEfficientSoftDiceLoss,
    )


@pytest.mark.parametrize("name", ["dice", "mime", "vnet", "gdl"])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("batch", [False, True])
def test_fused_adapter_equals_the_unfused_one_on_deep_supervision(name: str, ignore: bool, batch: bool) -> None:
    outputs = [o.detach() for o in _network(NUM_CLASSES)(torch.randn(3, 1, *PATCH))]
    targets = _ds_targets(_label_maps(3, seed=21, ignore=ignore, rare_absent_in=(1,)))
    weights = [float(w) for w in deep_supervision_weights(len(outputs))]
    ignore_label = IGNORE if ignore else None
    fused = NnUNetLossAdapter(_loss(name, batch), ignore_label=ignore_label, weight_ce=1.0)
    unfused = NnUNetLossAdapter(
        _loss(name, batch), ignore_label=ignore_label, weight_ce=1.0, ce_kwargs={"weight": torch.ones(NUM_CLASSES)}
    )
    assert fused.fuses_ce and not unfused.fuses_ce
    results = []
    for adapter in (fused, unfused):
        x = [o.clone().requires_grad_() for o in outputs]
        value = wrap_deep_supervision(adapter, weights)(x, targets)
        results.append((value, torch.autograd.grad(value, x[:-1])))
    (value, grads), (expected, expected_grads) = results
    torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-5)
    for g, g_expected in zip(grads, expected_grads):
        torch.testing.assert_close(g, g_expected, atol=1e-7, rtol=1e-4)


def test_label_smoothing_and_an_all_ignored_batch_as_nnunet() -> None:
    labels = _label_maps(2, seed=22, ignore=True)
    labels[1] = IGNORE  # image 1 entirely ignored
    logits = torch.randn(2, NUM_CLASSES, *PATCH)
    ours = NnUNetLossAdapter(
        _loss("dice", False), ignore_label=IGNORE, weight_ce=1.0, ce_kwargs={"label_smoothing": 0.1}
    )
    theirs = _nnunet_dc_and_ce(False, IGNORE, label_smoothing=0.1)
    assert ours.fuses_ce
    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    value, expected = ours(x1, labels), theirs(x2, labels.clone())
    torch.testing.assert_close(value, expected.float() + 1, atol=1e-5, rtol=1e-5)
    (grad,), (expected_grad,) = torch.autograd.grad(value, x1), torch.autograd.grad(expected, x2)
    torch.testing.assert_close(grad, expected_grad, atol=1e-7, rtol=1e-4)

    everything_ignored = torch.full_like(labels, IGNORE)
    x = logits.clone().requires_grad_()
    value = ours(x, everything_ignored)
    (grad,) = torch.autograd.grad(value, x)
    assert torch.isfinite(value) and float(grad.abs().max()) == 0.0
    torch.testing.assert_close(value, theirs(logits, everything_ignored.clone()).float() + 1)


# -- reduced precision ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mime", "vnet", "gdl"])
def test_half_precision_outputs_and_cpu_autocast(name: str) -> None:
    """nnU-Net trains under float16 autocast on CUDA: the loss takes half-precision logits, sums in float32 and
    returns a float32 scalar; checked on the CPU with float16 logits and with bfloat16 autocast of a real network."""
    extra = {"a": A[1:], "b": B[1:]} if name == "mime" else {}
    loss = get_loss(name, include_background=False, to_onehot_y=True, softmax=True, batch=True, **extra)
    adapter = NnUNetLossAdapter(loss, ignore_label=IGNORE, weight_ce=1.0)
    labels = _label_maps(2, seed=7, ignore=True)
    logits = torch.randn(2, NUM_CLASSES, *PATCH)
    full = adapter(logits, labels)
    half = adapter(logits.half(), labels)
    assert half.dtype == torch.float32 and torch.isfinite(half)
    torch.testing.assert_close(half, full, atol=2e-3, rtol=2e-3)

    network = _network(NUM_CLASSES)
    wrapped = wrap_deep_supervision(adapter, deep_supervision_weights(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = network(torch.randn(2, 1, *PATCH))
        value = wrapped(outputs, _ds_targets(labels))
    assert outputs[0].dtype == torch.bfloat16 and value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert all(torch.isfinite(p.grad).all() for p in network.parameters() if p.grad is not None)


def _ddp_data(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(23)
    return torch.randn(batch, NUM_CLASSES, *PATCH), _label_maps(batch, seed=24, ignore=True, rare_absent_in=(0,))


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str, split: list[int]) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        logits, labels = _ddp_data(sum(split))
        local = slice(sum(split[:rank]), sum(split[: rank + 1]))
        results = {}
        for label, loss in (
            ("ours", NnUNetLossAdapter(_loss("dice", True), ignore_label=IGNORE, ddp=True, weight_ce=1.0)),
            ("nnunet", DeepSupervisionWrapper(_nnunet_dc_and_ce(True, IGNORE, ddp=True), [1.0])),
        ):
            assert label == "nnunet" or loss.fuses_ce
            x = logits[local].clone().requires_grad_()
            value = loss(x, labels[local].clone()) if label == "ours" else loss([x], [labels[local].clone()])
            value.backward()
            results[label] = (value.detach().float(), x.grad)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes (about 5 s)
def test_ddp_batch_dice_with_ce_equals_nnunet_on_every_rank(tmp_path: Path) -> None:
    split = [2, 2]  # nnU-Net gathers per-image sums: it needs equal local batches
    torch.multiprocessing.spawn(
        _ddp_worker, args=(len(split), str(tmp_path / "init"), str(tmp_path), split), nprocs=len(split), join=True
    )
    for rank in range(len(split)):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        (value, grad), (expected, expected_grad) = results["ours"], results["nnunet"]
        torch.testing.assert_close(value, expected + 1, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grad, expected_grad, atol=1e-7, rtol=1e-4)
