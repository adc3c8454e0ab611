"""Held-out evaluation: sliding-window prediction of whole cases, then Dice, HD95 and volume ratio per class."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from .cases import Case, PreparedData
from .config import ExperimentConfig
from .runtime import Runtime, progress, resolve_device

__all__ = ["evaluate_model"]


def _predict(model: nn.Module, case: Case, data: PreparedData, config: ExperimentConfig, rt: Runtime) -> np.ndarray:
    """Label map of a whole case: sliding window over the image or volume (patches of its dimension), or over each
    slice of a volume (2D patches of volumes)."""
    from monai.inferers import sliding_window_inference

    if data.slice_axis is None:
        x = torch.from_numpy(case.image)[None]  # (1, C, *spatial)
    else:
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(case.image, data.slice_axis + 1, 0)))  # (S, C, H, W)
    preds = []
    chunk = max(1, config.sw_batch_size)
    for i in range(0, x.shape[0], chunk):
        xi = x[i : i + chunk].to(rt.device)
        with torch.autocast(device_type=rt.device.type, dtype=torch.float16, enabled=rt.amp and config.amp):
            logits = sliding_window_inference(
                xi,
                roi_size=tuple(config.patch_size),
                sw_batch_size=config.sw_batch_size,
                predictor=model,
                overlap=config.sw_overlap,
                mode="gaussian",
            )
        preds.append(torch.as_tensor(logits).argmax(1).to(torch.uint8).cpu())
    pred = torch.cat(preds).numpy()
    if data.slice_axis is None:
        return pred[0]
    return np.moveaxis(pred, 0, data.slice_axis)


def evaluate_model(
    model: nn.Module,
    data: PreparedData,
    config: ExperimentConfig,
    rt: Runtime | None = None,
    desc: str = "eval",
) -> tuple[dict[str, Any], list[dict[str, Any]], np.ndarray | None]:
    """Per-class Dice / HD95 / volume ratio of ``model`` on the held-out cases (paper conventions).

    Returns ``(summary, per_case, example_prediction)``: the :meth:`MetricAccumulator.summary` dict plus
    ``eval_time_s``; the per-case metrics; the predicted label map of the example slice (:meth:`PreparedData.example`).
    Under DDP each process evaluates a share of the cases and the results are gathered on every process.
    """
    from monai_mime.metrics import MetricAccumulator, evaluate_case

    rt = rt or Runtime(resolve_device(config.device))
    model.eval()
    ex_case, ex_slice = data.example()
    mine = list(range(rt.rank, len(data.val_cases), rt.world_size))
    results: list[tuple[int, dict[str, Any]]] = []
    example: np.ndarray | None = None
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in progress(mine, total=len(mine), desc=desc, config=config, enabled=rt.is_main):
            case = data.val_cases[i]
            pred = _predict(model, case, data, config, rt)
            gt, spacing, ev = case.label, case.spacing, pred
            ax = data.slice_axis
            if ax is not None and gt.shape[ax] == 1:  # a 2D image stored as a one-slice volume: metrics in 2D
                gt, ev = gt.squeeze(ax), pred.squeeze(ax)
                spacing = tuple(v for j, v in enumerate(spacing) if j != ax)
            m = evaluate_case(ev, gt, data.num_classes, spacing=spacing, case_id=case.case_id)
            results.append((i, m.to_dict()))
            if i == ex_case:
                example = pred if ex_slice is None else np.take(pred, ex_slice, axis=data.view_axis)
    if rt.distributed:
        import torch.distributed as dist

        gathered: list[Any] = [None] * rt.world_size
        dist.all_gather_object(gathered, (results, example))
        results = [r for part, _ in gathered for r in part]
        example = next((e for _, e in gathered if e is not None), None)
    results.sort(key=lambda r: r[0])
    from monai_mime.metrics import CaseMetrics

    acc = MetricAccumulator(class_names=data.class_names[1:], exclude_both_empty=config.exclude_both_empty)
    acc.extend(CaseMetrics.from_dict(r) for _, r in results)
    summary = acc.summary()
    summary["eval_time_s"] = time.perf_counter() - t0
    return summary, [r for _, r in results], example
