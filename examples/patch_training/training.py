"""The model (a MONAI ``UNet``) and its training loop with one loss: Adam, AMP on CUDA, DDP under torchrun."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from monai_mime import AdaptiveMimeLoss

from .cases import PreparedData
from .config import ExperimentConfig
from .runtime import Runtime, bars_on, log, progress, resolve_device, track_meta
from .sampling import PatchSampler, train_transform
from .specs import LossSpec, build_loss

__all__ = ["build_model", "train_model", "training_objective"]


def build_model(in_channels: int, num_classes: int, config: ExperimentConfig) -> nn.Module:
    """MONAI ``UNet`` of ``config.spatial_dims`` dimensions with ``config.channels`` feature maps (stride 2 between
    levels); with ``config.deep_supervision = N > 0`` a ``DynUNet`` of the same levels with N deep-supervision heads
    (3×3 convolutions, stride 2 below the first level), whose training output stacks the N + 1 outputs, all at
    full size, along dim 1."""
    from monai.networks.nets import DynUNet, UNet

    levels = len(config.channels)
    if config.deep_supervision:
        strides = [1] + [2] * (levels - 1)
        return DynUNet(
            spatial_dims=config.spatial_dims,
            in_channels=in_channels,
            out_channels=num_classes,
            kernel_size=[3] * levels,
            strides=strides,
            upsample_kernel_size=strides[1:],
            filters=list(config.channels),
            deep_supervision=True,
            deep_supr_num=config.deep_supervision,
        )
    return UNet(
        spatial_dims=config.spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=tuple(config.channels),
        strides=(2,) * (levels - 1),
        num_res_units=config.num_res_units,
    )


def training_objective(loss_fn: nn.Module, config: ExperimentConfig) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """``loss_fn`` itself, or with deep supervision MONAI's ``DeepSupervisionLoss`` around it, fed the DynUNet's
    stacked outputs unbound along dim 1 and the label map as floats (the wrapper resizes the target with
    nearest-exact interpolation, which needs floats; the outputs are all full size here, so it does not)."""
    if not config.deep_supervision:
        return loss_fn
    from monai.losses import DeepSupervisionLoss

    wrapper = DeepSupervisionLoss(cast(Any, loss_fn))  # annotated for MONAI's _Loss; any loss module runs in it

    def objective(stacked: torch.Tensor, labels: torch.Tensor) -> Any:
        return wrapper(list(torch.unbind(stacked, dim=1)), labels.float())

    return objective


def train_model(
    spec: LossSpec,
    data: PreparedData,
    config: ExperimentConfig,
    rt: Runtime | None = None,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Train one model with the loss ``spec`` (seeded by ``config.seed``).

    Args:
        spec: the loss.
        data: from :func:`prepare_data`.
        config: the settings.
        rt: runtime (device, DDP rank); default: single process on ``config.device``.
        on_epoch_end: called as ``on_epoch_end(epoch, model)`` (epoch counted from 1, unwrapped model) after
            every epoch, on every process; the model is put back in training mode afterwards.

    Returns:
        The unwrapped model, the loss after training (its state, e.g. AdaptiveMimeLoss's running averages, is what
        the checkpoint keeps) and a dict with ``loss_per_epoch``, ``loss_curve`` (``[step, mean loss over the
        last steps]``), ``train_time_s`` (without the callbacks), ``steps``, ``diverged`` and, for Mime, ``a``,
        ``b`` and ``threshold = b / (a + b)``; for the adaptive Mime ``operating_point_per_epoch``: after each epoch,
        the running ``Ī`` and ``Ū`` of Eq. 2 in voxels of one training patch (``intersection``, ``union``).
    """
    from monai.data import DataLoader, Dataset
    from monai.utils import set_determinism

    rt = rt or Runtime(resolve_device(config.device))
    set_determinism(seed=config.seed)  # python, numpy, torch seeds (and cudnn.deterministic, undone below)
    model = build_model(data.in_channels, data.num_classes, config).to(rt.device)
    loss_fn = build_loss(spec, data.statistics(), config.patch_size).to(rt.device)
    info: dict[str, Any] = {}
    ab_start = _weights(loss_fn)
    net: nn.Module = model
    if rt.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device] if rt.device.type == "cuda" else None)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=rt.amp and config.amp)
    use_amp = rt.amp and config.amp

    transform = train_transform(config.patch_size)
    transform.set_random_state(seed=config.seed + 7919 * rt.rank)
    dataset = Dataset(data.train_items, transform=transform)
    sampler = PatchSampler(
        len(data.train_items),
        config.steps_per_epoch * config.batch_size,
        num_replicas=rt.world_size,
        rank=rt.rank,
        seed=config.seed,
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=rt.device.type == "cuda",
        drop_last=True,
        generator=torch.Generator().manual_seed(config.seed + rt.rank),
        persistent_workers=config.num_workers > 0,
    )
    if rt.device.type == "cuda":  # speed over bitwise reproducibility on GPUs
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True

    operating_points: list[dict[str, Any]] = []

    def after_epoch(epoch: int, trained: nn.Module) -> None:
        point = _operating_point(loss_fn)
        if point is not None:
            operating_points.append({"epoch": epoch, **point})
        if on_epoch_end is not None:
            on_epoch_end(epoch, trained)

    objective = training_objective(loss_fn, config)
    t0 = time.perf_counter()
    with track_meta(False):
        per_epoch, curve, step, diverged, callback_time = _train_epochs(
            spec, net, objective, opt, scaler, use_amp, loader, sampler, config, rt, t0, model, after_epoch
        )
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    ab_end = _weights(loss_fn)
    if ab_end is not None and ab_start is not None:
        a, b = ab_end
        info.update(a=a.tolist(), b=b.tolist(), threshold=(b / (a + b)).tolist())
        if not (torch.equal(ab_start[0], a) and torch.equal(ab_start[1], b)):  # weights that move (adaptive)
            info.update(a_initial=ab_start[0].tolist(), b_initial=ab_start[1].tolist())
    if operating_points:
        info.update(operating_point_per_epoch=operating_points)
    info.update(
        loss_per_epoch=per_epoch,
        loss_curve=curve,
        train_time_s=time.perf_counter() - t0 - callback_time,
        steps=step,
        diverged=diverged,
    )
    return model, loss_fn, info


def _weights(loss_fn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Mime's (a, b) as float64 CPU tensors (of the loss, or of the Mime inside an ``X+ce`` compound), or None for
    losses without them."""
    for module in loss_fn.modules():
        a, b = getattr(module, "a", None), getattr(module, "b", None)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return a.detach().double().cpu().clone(), b.detach().double().cpu().clone()
    return None


def _operating_point(loss_fn: nn.Module) -> dict[str, list[float]] | None:
    """The adaptive Mime's running ``Ī``, ``Ū`` (of the loss, or inside an ``X+ce`` compound) in voxels of one
    image at its reference size, or None for other losses."""
    for module in loss_fn.modules():
        if isinstance(module, AdaptiveMimeLoss) and module.started:
            voxels = float(module.reference_voxels)
            return {
                "intersection": (module.running_intersection.double().cpu() * voxels).tolist(),
                "union": (module.running_union.double().cpu() * voxels).tolist(),
            }
    return None


def _train_epochs(
    spec: LossSpec,
    net: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], Any],
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    use_amp: bool,
    loader: Any,
    sampler: PatchSampler,
    config: ExperimentConfig,
    rt: Runtime,
    t0: float,
    model: nn.Module,
    on_epoch_end: Callable[[int, nn.Module], None] | None,
) -> tuple[list[float], list[list[float]], int, bool, float]:
    per_epoch: list[float] = []
    curve: list[list[float]] = []
    window = max(1, (config.epochs * config.steps_per_epoch) // 200)
    step, diverged, callback_time = 0, False, 0.0
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        net.train()
        losses: list[torch.Tensor] = []
        bar = progress(
            loader,
            total=len(loader),
            desc=f"{spec.text} {epoch + 1}/{config.epochs}",
            config=config,
            enabled=rt.is_main,
        )
        for batch in bar:
            x = batch["image"].to(rt.device, non_blocking=True).float()
            y = batch["label"].to(rt.device, non_blocking=True).long()
            with torch.autocast(device_type=rt.device.type, dtype=torch.float16, enabled=use_amp):
                logits = net(x)
                loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.detach().float())
            step += 1
            if step % 20 == 0 and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(torch.stack(losses[-20:]).mean()):.4g}")
        vals = torch.stack(losses).cpu().double()
        mean = vals.mean()
        if rt.distributed:
            import torch.distributed as dist

            t = mean.to(rt.device if rt.device.type == "cuda" else "cpu").float()
            dist.all_reduce(t)
            mean = t.double().cpu() / rt.world_size
        per_epoch.append(float(mean))
        arr = vals.numpy()
        base = step - len(arr)
        for s in range(0, len(arr), window):
            curve.append([base + min(s + window, len(arr)), float(arr[s : s + window].mean())])
        if not bars_on(config):
            log(
                f"[{spec.text}] epoch {epoch + 1}/{config.epochs} loss {float(mean):.5g} "
                f"({time.perf_counter() - t0:.0f} s)",
                rt,
            )
        if not math.isfinite(float(mean)):
            diverged = True
            log(f"[{spec.text}] loss is not finite at epoch {epoch + 1}: training stopped", rt)
            break
        if on_epoch_end is not None:
            tc = time.perf_counter()
            with track_meta(True):
                on_epoch_end(epoch + 1, model)
            callback_time += time.perf_counter() - tc
    return per_epoch, curve, step, diverged, callback_time
