"""The results of an experiment as files: ``results.json`` (every number) and ``results.md`` (paper-style tables)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_number", "results_markdown", "write_results"]


def format_number(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _fmt(mean: float | None, std: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if mean is None:
        return "–"
    if std is None:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _held_out_view(data: dict[str, Any], spatial_dims: int) -> str:
    if spatial_dims == 3:
        return "volumes (3D sliding window)"
    return "images" if data["slice_axis"] is None else "volumes (2D slice by slice)"


def results_markdown(results: dict[str, Any]) -> str:
    """The paper-style tables of ``results`` (DSC %, HD95, volume ratio, time) as Markdown."""
    cfg, d = results["config"], results["data"]
    classes = d["classes"][1:]
    losses = results["losses"]
    unit = d["spacing_unit"]
    env = results["environment"]
    steps = cfg["epochs"] * cfg["steps_per_epoch"]
    lines = [
        f"# Loss comparison on {d['name']}",
        "",
        f"{len(cfg['patch_size'])}D patches {'×'.join(str(p) for p in cfg['patch_size'])}, "
        + (
            f"MONAI DynUNet {tuple(cfg['channels'])} with {cfg['deep_supervision']} deep-supervision heads "
            "(MONAI's DeepSupervisionLoss), "
            if cfg.get("deep_supervision")
            else f"MONAI UNet {tuple(cfg['channels'])}, "
        )
        + f"Adam lr {cfg['lr']:g}, {steps} steps × {cfg['batch_size']} patches"
        + (f" × {env['world_size']} processes" if env["world_size"] > 1 else "")
        + f", seed {cfg['seed']}, device {env['device']}. Train: {d['num_train_cases']} cases "
        + (f"({d['num_train_items']} 2D images)" if len(cfg["patch_size"]) == 2 else "(whole volumes)")
        + f"; held-out: {d['num_val_cases']} cases, whole {_held_out_view(d, len(cfg['patch_size']))}. "
        f"Mean ± std over held-out cases; a class missed (or predicted where absent) counts DSC 0 and HD95 = "
        f"image diagonal, a class absent from both counts DSC 100 and HD95 0"
        + (" (here excluded instead)" if cfg.get("exclude_both_empty") else "")
        + ".",
        "",
    ]

    def best(key: str, cls: str | None, lower: bool) -> float | None:
        vals = []
        for e in losses.values():
            v = e["mean"][key] if cls is None else e["per_class"][cls][f"{key}_mean"]
            if v is not None:
                vals.append(v)
        if not vals:
            return None
        return min(vals) if lower else max(vals)

    for key, title, scale, lower, digits in (
        ("dice", "DSC (%)", 100.0, False, 1),
        ("hd95", f"HD95 ({unit})", 1.0, True, 2),
    ):
        lines += [
            f"## {title}",
            "",
            "| Loss | " + " | ".join(classes) + " | mean |",
            "|---|" + "---:|" * (len(classes) + 1),
        ]
        for name, e in losses.items():
            cells = []
            for c in classes:
                pc = e["per_class"][c]
                s = _fmt(pc[f"{key}_mean"], pc[f"{key}_std"], scale, digits)
                if pc[f"{key}_mean"] is not None and pc[f"{key}_mean"] == best(key, c, lower) and len(losses) > 1:
                    s = f"**{s}**"
                cells.append(s)
            mv = e["mean"][key]
            ms = _fmt(mv, None, scale, digits)
            if mv is not None and mv == best(key, None, lower) and len(losses) > 1:
                ms = f"**{ms}**"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {ms} |")
        lines.append("")
    lines += [
        "## Predicted ÷ true voxels (held-out set) and training time",
        "",
        "| Loss | " + " | ".join(classes) + " | train (s) | steps |",
        "|---|" + "---:|" * (len(classes) + 2),
    ]
    for name, e in losses.items():
        ratios = [f"{e['per_class'][c]['volume_ratio']:.2f}" for c in classes]
        flag = " (diverged)" if e.get("diverged") else ""
        lines.append(f"| {name}{flag} | " + " | ".join(ratios) + f" | {e['train_time_s']:.0f} | {e['steps']} |")
    mime = {n: e for n, e in losses.items() if "a" in e}
    if mime:
        lines += [
            "",
            "## Mime weights (a, b, threshold b/(a+b)), classes "
            + ", ".join(d["classes"][-len(next(iter(mime.values()))["a"]) :]),
            "",
        ]
        for n, e in mime.items():
            a = ", ".join(f"{v:.3g}" for v in e["a"])
            b = ", ".join(f"{v:.3g}" for v in e["b"])
            t = ", ".join(f"{v:.3f}" for v in e["threshold"])
            lines.append(f"- `{n}`: a = [{a}], b = [{b}], threshold = [{t}]")
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else (None if math.isnan(f) else ("inf" if f > 0 else "-inf"))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def write_results(results: dict[str, Any], out: str | os.PathLike[str]) -> None:
    """Write ``results.json`` (non-finite numbers as ``null``/``"inf"``) and ``results.md`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(_jsonable(results), indent=1) + "\n")
    tmp.replace(out / "results.json")
    (out / "results.md").write_text(results_markdown(results))
