"""The nnU-Net loss adapters (nnunet_trainers.losses) against nnU-Net's own losses, on nnU-Net's real shapes.

* deep supervision: the outputs of a real ``get_network_from_plans`` PlainConvUNet and the targets of nnU-Net's own
  ``DownsampleSegForDSTransform``, weighted with nnU-Net's weights;
* the adapter with our Soft Dice equals nnU-Net's ``DC_and_CE_loss`` / ``DC_and_BCE_loss`` with
  ``MemoryEfficientSoftDiceLoss`` (up to the constant 1, ``1 − dc`` vs ``−dc``) with and without the ignore label,
  batch dice and cross-entropy, for label maps and for regions — so the target handling mirrors nnU-Net's;
* ignore label and regions with Mime, V-Net and GDL;
* DDP batch dice with two ``gloo`` processes: the loss equals the single-process loss on the concatenated batch and
  the gradients match (input gradients, and parameter gradients of a DDP-wrapped model), also for uneven batches.

The "CE" adapters' fused path and reduced precision: ``test_losses_compound_nnunet.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from _nnunet_plans import NETWORK_CLASS, REQUIRES_IMPORT, STRIDES, tiny_unet_arch_kwargs  # noqa: E402
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform  # noqa: E402
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss  # noqa: E402
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss  # noqa: E402
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # noqa: E402

from monai_mime import get_loss  # noqa: E402
from nnunet_trainers.losses import (  # noqa: E402
    NnUNetLossAdapter,
    deep_supervision_weights,
    wrap_deep_supervision,
)

torch.set_num_threads(1)

NUM_CLASSES = 4  # background + 3; the ignore label is then 4
IGNORE = NUM_CLASSES
PATCH = (32, 32)
A = [0.5, 2.0, 3.0, 8.0]
B = [0.7, 0.1, 0.2, 0.05]


def _network(num_outputs: int, seed: int = 0) -> torch.nn.Module:
    """A small 2D PlainConvUNet built the way nnU-Net builds it from a plans file."""
    torch.manual_seed(seed)
    return get_network_from_plans(
        NETWORK_CLASS,
        tiny_unet_arch_kwargs(),
        REQUIRES_IMPORT,
        1,
        num_outputs,
        allow_init=True,
        deep_supervision=True,
    )


def _ds_scales() -> list[list[float]]:
    """``nnUNetTrainer._get_deep_supervision_scales`` for STRIDES."""
    return list(list(i) for i in 1 / np.cumprod(np.vstack(STRIDES), axis=0))[:-1]


def _label_maps(batch: int, seed: int, ignore: bool, rare_absent_in: tuple[int, ...] = ()) -> torch.Tensor:
    """int16 label maps ``(B, 1, 32, 32)`` like nnU-Net's data loader; blobs of classes 1..3, optional ignore label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, 1, *PATCH, dtype=torch.int16)
    yy, xx = torch.meshgrid(torch.arange(PATCH[0]), torch.arange(PATCH[1]), indexing="ij")
    for b in range(batch):
        for k in range(1, NUM_CLASSES):
            if k == NUM_CLASSES - 1 and b in rare_absent_in:
                continue
            cy, cx = torch.randint(4, 28, (2,), generator=g).tolist()
            r = 2 + k
            labels[b, 0][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
        if ignore:
            labels[b, 0, :, : 3 + b] = IGNORE
    return labels


def _ds_targets(labels: torch.Tensor) -> list[torch.Tensor]:
    """nnU-Net's own downsampling of the target for deep supervision, per sample then collated."""
    transform = DownsampleSegForDSTransform(ds_scales=_ds_scales())
    per_sample = [transform(segmentation=labels[b])["segmentation"] for b in range(labels.shape[0])]
    return [torch.stack([s[i] for s in per_sample]) for i in range(len(per_sample[0]))]


def _regions(labels: torch.Tensor, regions: list[tuple[int, ...]], ignore: bool) -> torch.Tensor:
    """Region masks like ``ConvertSegmentationToRegionsTransform``: one bool channel per region, ignore last."""
    channels = [torch.isin(labels[:, 0], torch.tensor(r, dtype=labels.dtype)) for r in regions]
    if ignore:
        channels.append(labels[:, 0] == IGNORE)
    return torch.stack(channels, 1)


# -- deep supervision -----------------------------------------------------------------------------------------------
def test_deep_supervision_weights_match_nnunet_formula() -> None:
    w = deep_supervision_weights(4)
    np.testing.assert_allclose(w, np.array([1, 0.5, 0.25, 0]) / 1.75)
    w_ddp = deep_supervision_weights(4, ddp=True)
    assert w_ddp[-1] > 0 and abs(w_ddp.sum() - 1) < 1e-12
    np.testing.assert_allclose(deep_supervision_weights(4, ddp=True, compiled=True), w)
    np.testing.assert_allclose(deep_supervision_weights(1), [1.0])


@pytest.mark.parametrize("name", ["mime", "vnet", "gdl"])
def test_deep_supervision_on_real_network_outputs(name: str) -> None:
    network = _network(NUM_CLASSES)
    data = torch.randn(2, 1, *PATCH)
    outputs = network(data)
    targets = _ds_targets(_label_maps(2, seed=1, ignore=False))
    assert isinstance(outputs, (list, tuple)) and len(outputs) == len(targets) == 3
    shapes = [(32, 32), (16, 16), (8, 8)]
    assert [tuple(o.shape[2:]) for o in outputs] == [tuple(t.shape[2:]) for t in targets] == shapes
    extra = {"a": A[1:], "b": B[1:]} if name == "mime" else {}
    loss = get_loss(name, include_background=False, to_onehot_y=True, softmax=True, **extra)
    weights = deep_supervision_weights(len(outputs))
    wrapped = wrap_deep_supervision(NnUNetLossAdapter(loss), weights)
    assert isinstance(wrapped, DeepSupervisionWrapper)
    value = wrapped(outputs, targets)
    expected = sum(w * loss(o, t) for w, o, t in zip(weights, outputs, targets) if w != 0)
    torch.testing.assert_close(value, expected)
    value.backward()
    grads = [p.grad for p in network.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# -- the adapter reproduces nnU-Net's compound losses --------------------------------------------------------------
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("with_ce", [False, True])
def test_label_map_adapter_equals_nnunet_dc_and_ce(ignore: bool, batch_dice: bool, with_ce: bool) -> None:
    """Our Soft Dice through the adapter == nnU-Net's default loss + 1, same gradients (ignore label, batch dice)."""
    network = _network(NUM_CLASSES)
    outputs = network(torch.randn(3, 1, *PATCH))
    targets = _ds_targets(_label_maps(3, seed=2, ignore=ignore, rare_absent_in=(1,)))
    weights = deep_supervision_weights(len(outputs))
    ignore_label = IGNORE if ignore else None

    ours = get_loss("dice", include_background=False, to_onehot_y=True, softmax=True, batch=batch_dice)
    ours = wrap_deep_supervision(
        NnUNetLossAdapter(ours, ignore_label=ignore_label, weight_ce=1.0 if with_ce else 0.0), weights
    )
    theirs = DC_and_CE_loss(
        {"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False},
        {},
        weight_ce=1 if with_ce else 0,
        weight_dice=1,
        ignore_label=ignore_label,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    theirs = DeepSupervisionWrapper(theirs, weights)

    detached = [o.detach().requires_grad_() for o in outputs]
    ours_value = ours(detached, targets)
    ours_grads = torch.autograd.grad(ours_value, detached, allow_unused=True)
    detached2 = [o.detach().requires_grad_() for o in outputs]
    theirs_value = theirs(detached2, [t.clone() for t in targets])
    theirs_grads = torch.autograd.grad(theirs_value, detached2, allow_unused=True)
    torch.testing.assert_close(ours_value, theirs_value.float() + 1, atol=1e-5, rtol=1e-5)
    assert ours_grads[-1] is None and theirs_grads[-1] is None  # the lowest scale has weight 0 in both
    for g_ours, g_theirs in zip(ours_grads[:-1], theirs_grads[:-1]):
        torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("with_ce", [False, True])
def test_region_adapter_equals_nnunet_dc_and_bce(ignore: bool, batch_dice: bool, with_ce: bool) -> None:
    """Region-based training: sigmoid, one channel per region, the ignore mask in the last target channel."""
    regions = [(1, 2, 3), (2, 3), (3,)]
    network = _network(len(regions))
    outputs = [o.detach().requires_grad_() for o in network(torch.randn(2, 1, *PATCH))]
    labels = _label_maps(2, seed=3, ignore=ignore)
    targets = _ds_targets(labels)
    region_targets = [_regions(t, regions, ignore) for t in targets]
    weights = deep_supervision_weights(len(outputs))

    ours = get_loss("dice", include_background=True, sigmoid=True, batch=batch_dice)
    ours = wrap_deep_supervision(
        NnUNetLossAdapter(
            ours, region_based=True, ignore_label=IGNORE if ignore else None, weight_ce=1.0 if with_ce else 0.0
        ),
        weights,
    )
    theirs = DC_and_BCE_loss(
        {},
        {"batch_dice": batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": False},
        weight_ce=1 if with_ce else 0,
        use_ignore_label=ignore,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    theirs = DeepSupervisionWrapper(theirs, weights)
    ours_value = ours(outputs, region_targets)
    ours_grads = torch.autograd.grad(ours_value, outputs[:2])
    theirs_value = theirs(outputs, region_targets)
    theirs_grads = torch.autograd.grad(theirs_value, outputs[:2])
    torch.testing.assert_close(ours_value, theirs_value.float() + 1, atol=1e-5, rtol=1e-5)
    for g_ours, g_theirs in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=1e-4)


# -- ignore label and regions with the paper's losses ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["mime", "vnet", "gdl"])
def test_ignore_label_voxels_take_no_part(name: str) -> None:
    labels = _label_maps(2, seed=4, ignore=True).long()
    ignored = labels == IGNORE
    extra = {"a": A[1:], "b": B[1:]} if name == "mime" else {}
    loss = get_loss(name, include_background=False, to_onehot_y=True, softmax=True, **extra)
    adapter = NnUNetLossAdapter(loss, ignore_label=IGNORE, weight_ce=1.0)
    logits = torch.randn(2, NUM_CLASSES, *PATCH, requires_grad=True)
    value = adapter(logits, labels)
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert float(grad.masked_select(ignored.expand_as(grad)).abs().max()) == 0.0
    # whatever the network predicts on ignored voxels, the loss is the same
    changed = logits.detach().clone()
    changed[ignored.expand_as(changed)] = torch.randn(int(ignored.sum()) * NUM_CLASSES)
    torch.testing.assert_close(adapter(changed, labels), value.detach())
    # the same as the loss without ignore handling on a label map where ignored voxels are masked out explicitly
    direct = loss(logits.detach(), torch.where(ignored, 0, labels), mask=~ignored)
    ce = torch.nn.functional.cross_entropy(logits.detach(), labels[:, 0], ignore_index=IGNORE)
    torch.testing.assert_close(value.detach(), direct + ce)


def test_all_ignored_batch_skips_cross_entropy_like_nnunet() -> None:
    labels = torch.full((1, 1, *PATCH), IGNORE, dtype=torch.int16)
    loss = get_loss("mime", a=A[1:], b=B[1:], include_background=False, to_onehot_y=True, softmax=True)
    value = NnUNetLossAdapter(loss, ignore_label=IGNORE, weight_ce=1.0)(torch.randn(1, NUM_CLASSES, *PATCH), labels)
    assert float(value) == 0.0


@pytest.mark.parametrize("name", ["mime", "vnet", "gdl"])
@pytest.mark.parametrize("ignore", [False, True])
def test_regions_with_paper_losses(name: str, ignore: bool) -> None:
    regions = [(1, 2, 3), (2, 3), (3,)]
    labels = _label_maps(2, seed=5, ignore=ignore, rare_absent_in=(0,))
    target = _regions(labels, regions, ignore)
    extra = {"a": [1.0, 2.0, 4.0], "b": [0.1, 0.1, 0.1]} if name == "mime" else {}
    loss = get_loss(name, include_background=True, sigmoid=True, **extra)
    adapter = NnUNetLossAdapter(loss, region_based=True, ignore_label=IGNORE if ignore else None, weight_ce=1.0)
    logits = torch.randn(2, len(regions), *PATCH, requires_grad=True)
    value = adapter(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    masks = target[:, :-1] if ignore else target
    mask = ~target[:, -1:] if ignore else None
    expected = loss(logits.detach(), masks.float(), mask=mask)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.detach(), masks.float(), reduction="none")
    if ignore:
        assert mask is not None
        expected = expected + (bce * mask).sum() / mask.sum()
        assert float(grad.masked_select((~mask).expand_as(grad)).abs().max()) == 0.0
    else:
        expected = expected + bce.mean()
    torch.testing.assert_close(value.detach(), expected)


def test_adapter_rejects_mismatched_target_kinds() -> None:
    with pytest.raises(ValueError, match="to_onehot_y=True"):
        NnUNetLossAdapter(get_loss("vnet", softmax=True))
    with pytest.raises(ValueError, match="to_onehot_y=False"):
        NnUNetLossAdapter(get_loss("vnet", to_onehot_y=True, sigmoid=True), region_based=True)
    adapter = NnUNetLossAdapter(get_loss("vnet", to_onehot_y=True, softmax=True))
    with pytest.raises(ValueError, match=r"\(B, 1, \*spatial\)"):
        adapter(torch.randn(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_float_and_int_label_maps_agree() -> None:
    labels = _label_maps(2, seed=6, ignore=True)
    loss = get_loss("gdl", include_background=False, to_onehot_y=True, softmax=True, batch=True)
    adapter = NnUNetLossAdapter(loss, ignore_label=IGNORE, weight_ce=1.0)
    logits = torch.randn(2, NUM_CLASSES, *PATCH)
    torch.testing.assert_close(adapter(logits, labels), adapter(logits, labels.float()))


# -- DDP: batch dice sums all-gathered with gradients (two gloo processes) ------------------------------------------
DDP_CASES = ["dice", "vnet", "gdl", "mime"]


def _ddp_loss(name: str, ddp: bool) -> NnUNetLossAdapter:
    """Batch dice with the ignore label and no CE: the loss of the global batch, identical on every rank."""
    extra = {"a": A[1:], "b": B[1:]} if name == "mime" else {}
    loss = get_loss(name, include_background=False, to_onehot_y=True, softmax=True, batch=True, **extra)
    return NnUNetLossAdapter(loss, ignore_label=IGNORE, ddp=ddp)


def _ddp_data(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(11)
    logits = torch.randn(batch, NUM_CLASSES, *PATCH)
    labels = _label_maps(batch, seed=12, ignore=True, rare_absent_in=(0,))
    return logits, labels


def _prefixed(prefix: str) -> Callable[[str], str]:
    """An ``assert_close`` message that names the case before the comparison's own message."""
    return lambda message: f"{prefix}: {message}"


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(13)
    return torch.nn.Conv2d(NUM_CLASSES, NUM_CLASSES, 3, padding=1)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str, split: list[int]) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        logits, labels = _ddp_data(sum(split))
        start = sum(split[:rank])
        local = slice(start, start + split[rank])
        results = {}
        for name in DDP_CASES:
            loss = _ddp_loss(name, ddp=True)
            x = logits[local].clone().requires_grad_()
            value = loss(x, labels[local])
            value.backward()
            model = DistributedDataParallel(_tiny_model())
            model_value = loss(model(logits[local]), labels[local])
            model_value.backward()
            results[name] = {
                "loss": value.detach(),
                "input_grad": x.grad,
                "model_loss": model_value.detach(),
                "param_grads": [p.grad.clone() for p in model.parameters() if p.grad is not None],
            }
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes (about 10 s)
@pytest.mark.parametrize("split", [[2, 2], [2, 1]], ids=["even", "uneven"])
def test_ddp_batch_dice_all_gather_matches_single_process(tmp_path: Path, split: list[int]) -> None:
    """Each rank holds part of the batch; the loss is the single-process batch-dice loss of the whole batch.

    Gradients: AllGatherGrad sums the upstream gradient over ranks, so rank r's input gradient is world_size times
    the single-process gradient of its samples; DDP's averaging of parameter gradients divides that back, so the
    parameter gradients of a DDP-wrapped model equal the single-process ones (also for uneven local batches).
    """
    world_size = len(split)
    torch.multiprocessing.spawn(
        _ddp_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path), split), nprocs=world_size, join=True
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    logits, labels = _ddp_data(sum(split))
    for name in DDP_CASES:
        loss = _ddp_loss(name, ddp=False)
        x = logits.clone().requires_grad_()
        full = loss(x, labels)
        full.backward()
        model = _tiny_model()
        model_full = loss(model(logits), labels)
        model_full.backward()
        full_param_grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert x.grad is not None
        start = 0
        for rank, n in enumerate(split):
            got = ranks[rank][name]
            torch.testing.assert_close(
                got["loss"],
                full.detach(),
                atol=1e-6,
                rtol=1e-5,
                msg=_prefixed(f"{name} rank {rank}"),
            )
            torch.testing.assert_close(got["model_loss"], model_full.detach(), atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(
                got["input_grad"] / world_size,
                x.grad[start : start + n],
                atol=1e-8,
                rtol=1e-4,
                msg=_prefixed(f"{name} grad"),
            )
            for g_rank, g_full in zip(got["param_grads"], full_param_grads):
                # float32 sums in another order: tolerance relative to the gradient's scale
                scale = float(g_full.abs().max())
                torch.testing.assert_close(
                    g_rank, g_full, atol=1e-5 * scale, rtol=1e-4, msg=_prefixed(f"{name} param grad")
                )
            start += n
