"""One experiment: every loss spec trained and evaluated from the same seed, data and budget; files written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .cases import PreparedData
from .checkpoints import save_checkpoint
from .config import ExperimentConfig, ExperimentError
from .data import prepare_data
from .evaluation import evaluate_model
from .figures import plot_results
from .reporting import format_number, write_results
from .runtime import log, setup_runtime
from .specs import LossSpec, build_loss, parse_loss_specs
from .training import train_model

__all__ = ["run_experiment"]


def run_experiment(
    config: ExperimentConfig,
    data: PreparedData | None = None,
) -> dict[str, Any]:
    """Train and evaluate one model per loss spec of ``config`` (same seed, data and budget for all).

    Args:
        config: the settings; ``config.out`` (if not None) receives ``results.json``, ``results.md``,
            ``results.png`` and ``checkpoints/<spec>.pt``.
        data: data from :func:`prepare_data` to reuse across calls (loaded from ``config`` otherwise).

    Returns:
        The results dict written to ``results.json``: ``config``, ``data`` (name, classes, sizes, statistics),
        ``losses`` (per spec: ``per_class`` Dice/HD95 mean and std, volume ratio, ``mean``, training time,
        loss curves, Mime's a/b/threshold, ``per_case``) and ``environment``.

    Raises:
        ExperimentError: bad input (missing folder, labels disagreeing with dataset.json, unknown loss...).
    """
    config.validate()
    specs = parse_loss_specs(config.losses)
    if config.threads > 0:
        torch.set_num_threads(int(config.threads))
    rt = setup_runtime(config)
    try:
        data = data if data is not None else prepare_data(config)
        if not data.val_cases:
            raise ExperimentError("no held-out case to evaluate")
        stats = data.statistics()
        for spec in specs:  # fail early on bad options, before any training
            build_loss(spec, stats, config.patch_size)
        out = Path(config.out) if config.out else None
        if out is not None and rt.is_main:
            try:
                (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ExperimentError(f"cannot create output folder {out}: {e.strerror}") from None
        results: dict[str, Any] = {
            "config": config.to_dict(),
            "data": {
                "name": data.name,
                "source": data.source,
                "classes": data.class_names,
                "num_train_cases": data.num_train_cases,
                "num_train_items": len(data.train_items),
                "num_val_cases": len(data.val_cases),
                "slice_axis": data.slice_axis,
                "spacing_unit": data.spacing_unit,
                "train_presence": [int(v) for v in np.asarray(stats.presence)],
                "train_voxels": [int(v) for v in np.asarray(stats.total_counts)],
            },
            "environment": {
                "device": str(rt.device),
                "world_size": rt.world_size,
                "amp": bool(rt.amp and config.amp),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
            "losses": {},
        }
        examples: dict[str, np.ndarray | None] = {}
        for spec in specs:
            intermediate: dict[str, Any] = {}

            def at_epoch(epoch: int, m: nn.Module, spec: LossSpec = spec, store: dict = intermediate) -> None:
                if epoch in config.eval_epochs and epoch < config.epochs:
                    summ, _, _ = evaluate_model(m, data, config, rt, desc=f"{spec.text} eval @{epoch}")
                    summ["steps"] = epoch * config.steps_per_epoch
                    store[str(epoch)] = summ
                    log(f"{spec.text} @ epoch {epoch}: mean Dice {format_number(summ['mean']['dice'], 4)}", rt)

            callback = at_epoch if config.eval_epochs else None
            model, loss_fn, info = train_model(spec, data, config, rt, on_epoch_end=callback)
            summary, per_case, example = evaluate_model(model, data, config, rt, desc=f"{spec.text} eval")
            examples[spec.text] = example
            entry: dict[str, Any] = {"spec": {"name": spec.name, "options": spec.options}}
            entry.update(summary)
            entry.update(info)
            entry["per_case"] = per_case
            if intermediate:
                entry["intermediate"] = intermediate  # epoch -> summary at that budget
            if out is not None and config.checkpoints and rt.is_main:
                entry["checkpoint"] = str(save_checkpoint(out / "checkpoints", spec, model, loss_fn, config, data))
            results["losses"][spec.text] = entry
            m = summary["mean"]
            log(
                f"{spec.text}: mean Dice {format_number(m['dice'], 4)}, "
                f"mean HD95 {format_number(m['hd95'], 2)} {data.spacing_unit} "
                f"(train {info['train_time_s']:.0f} s, {info['steps']} steps)",
                rt,
            )
        if out is not None and rt.is_main:
            write_results(results, out)
            if config.figure:
                try:
                    plot_results(results, data, examples, out / "results.png")
                except ImportError:
                    log("matplotlib is not installed: no figure (pip install matplotlib)", rt)
        if rt.distributed:
            import torch.distributed as dist

            dist.barrier()  # rank 0 has written everything
        return results
    finally:
        if rt.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
