"""The patch-size axis of the ablation: the same settings trained on patches of several sizes at equal compute.

Every size gets the same number of voxels per step: the batch at size ``p`` is ``batch_size × (p₀/p)^d`` for the
first (reference) size ``p₀`` and ``d`` spatial dimensions, so ``batch × p^d`` is the same at every size. Smaller
patches leave more (patch, class) pairs empty, the case where every Dice variant divides by (almost) nothing: the
share of empty pairs is measured on the first epoch's training patches (:func:`~.sampling.class_absence`) and
reported beside the scores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cases import PreparedData
from .config import ExperimentConfig, ExperimentError
from .runs import load_scores, mean_std, run_name
from .sampling import class_absence

__all__ = [
    "collect_sweep",
    "constant_voxel_batches",
    "paired_differences",
    "plot_sweep",
    "record_class_absence",
    "sweep_markdown",
]

#: The sweep's summary scores (keys of :func:`~.runs.run_scores`): the paper's mean DSC, where a class absent from a
#: case and not predicted scores 100, and the mean over classes of the DSC on the cases that contain the class, where
#: a class never predicted scores 0.
METRICS = (("dice", "mean DSC %"), ("dice_present", "mean DSC % where present"))


def constant_voxel_batches(patch_sizes: Sequence[int], batch_size: int, spatial_dims: int) -> list[int]:
    """The batch size per patch size that keeps ``batch × size^spatial_dims`` at ``batch_size × patch_sizes[0]^d``.

    Raises:
        ExperimentError: a size whose batch would not be a whole number.
    """
    voxels = batch_size * patch_sizes[0] ** spatial_dims
    batches = []
    for p in patch_sizes:
        batch, rest = divmod(voxels, p**spatial_dims)
        if rest or batch < 1:
            raise ExperimentError(
                f"patch size {p} cannot keep {voxels} voxels per step ({batch_size} × {patch_sizes[0]}^{spatial_dims})"
                " with a whole batch; choose sizes that divide the first one"
            )
        batches.append(batch)
    return batches


def _absence_path(out: Path, patch: int) -> Path:
    return out / f"patch{patch}" / "class_absence.json"


def record_class_absence(data: PreparedData, config: ExperimentConfig, out: Path, patch: int) -> None:
    """Write ``patch<p>/class_absence.json``: per class, the share of the first epoch's training patches (of
    ``config``'s size, batch and seed) without it (once; kept if it exists)."""
    path = _absence_path(out, patch)
    if path.exists():
        return
    num_patches = config.steps_per_epoch * config.batch_size
    shares = class_absence(data.train_items, config.patch_size, num_patches, data.num_classes, seed=config.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "patch_size": list(config.patch_size),
        "batch_size": config.batch_size,
        "num_patches": num_patches,
        "classes": data.class_names,
        "absent_share": [float(v) for v in shares],
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def collect_sweep(
    out: Path,
    settings: list[str],
    budgets: list[int],
    seeds: list[int],
    patch_sizes: list[int],
    paired: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The finished runs of the sweep: ``sizes`` (batch, voxels per step, per-class and overall share of empty
    (patch, foreground class) pairs) and ``runs[steps][setting][size]`` = per-seed scores; with ``paired`` =
    ``(setting, reference)`` also ``paired`` (:func:`paired_differences`)."""
    classes: list[str] = []
    sizes: dict[str, Any] = {}
    for p in patch_sizes:
        path = _absence_path(out, p)
        if path.exists():
            rec = json.loads(path.read_text())
            share = rec["absent_share"][1:]
            sizes[str(p)] = {
                "batch_size": rec["batch_size"],
                "voxels_per_step": rec["batch_size"] * math.prod(rec["patch_size"]),
                "spatial_dims": len(rec["patch_size"]),
                "class_absent": share,
                "empty_pairs": float(np.mean(share)),
            }
    runs: dict[str, Any] = {}
    for steps in budgets:
        for setting in settings:
            for p in patch_sizes:
                for seed in seeds:
                    found = load_scores(out / run_name(steps, seed, setting, patch=p))
                    if found is not None:
                        classes, scores = found
                        runs.setdefault(str(steps), {}).setdefault(setting, {}).setdefault(str(p), [])
                        runs[str(steps)][setting][str(p)].append({"seed": seed, **scores})
    collected = {"classes": classes, "patch_sizes": [str(p) for p in patch_sizes], "sizes": sizes, "runs": runs}
    if paired is not None:
        collected["paired"] = paired_differences(collected, *paired)
    return collected


def paired_differences(collected: dict[str, Any], setting: str, reference: str) -> dict[str, Any]:
    """Per budget and patch size, ``setting`` minus ``reference`` seed by seed, for each of :data:`METRICS`.

    Only seeds where both runs finished enter (a paired comparison: the same seed gives both losses the same
    network initialisation and patch order), so the noise that the two settings share cancels. Returns
    ``{"setting", "reference", "differences": {steps: {size: {"seeds": [...], key: [difference per seed]}}}}``.
    """
    differences: dict[str, Any] = {}
    for steps, per_setting in collected["runs"].items():
        ours, theirs = per_setting.get(setting, {}), per_setting.get(reference, {})
        for p in collected["patch_sizes"]:
            mine = {r["seed"]: r for r in ours.get(p, [])}
            other = {r["seed"]: r for r in theirs.get(p, [])}
            common = sorted(set(mine) & set(other))
            if not common:
                continue
            entry: dict[str, Any] = {"seeds": common}
            for key, _ in METRICS:
                entry[key] = [
                    None if mine[s][key] is None or other[s][key] is None else mine[s][key] - other[s][key]
                    for s in common
                ]
            differences.setdefault(steps, {})[p] = entry
    return {"setting": setting, "reference": reference, "differences": differences}


def _paired_markdown(collected: dict[str, Any], steps: str) -> list[str]:
    """The paired-difference table of one budget: per size and metric, the per-seed differences, their mean ±
    standard deviation and range, in DSC points."""
    paired = collected["paired"]
    per_size = paired["differences"].get(steps)
    if not per_size:
        return []
    lines = [
        f"### {steps} steps: paired difference `{paired['setting']}` − `{paired['reference']}` (DSC points)",
        "",
        "Same seed, same network initialisation and patch order; positive: the first setting scores higher. "
        "± is the standard deviation of the per-seed differences.",
        "",
        "| patch | seeds | metric | per seed | mean ± sd | min … max |",
        "|---|---|---|---|---:|---:|",
    ]
    for p, entry in per_size.items():
        for key, title in METRICS:
            values = [v for v in entry[key] if v is not None]
            if not values:
                continue
            m, sd = mean_std(values)
            per_seed = ", ".join(f"{100 * v:+.1f}" for v in entry[key] if v is not None)
            lines.append(
                f"| {_size_label(collected, p)} | {', '.join(map(str, entry['seeds']))} | {title} | {per_seed} | "
                f"{100 * m:+.1f} ± {100 * sd:.1f} | {100 * min(values):+.1f} … {100 * max(values):+.1f} |"
            )
    lines.append("")
    return lines


def _cell(value: float, scale: float = 100.0, digits: int = 1) -> str:
    """A table cell: ``value × scale``, or "–" where no run gives a value (e.g. a class absent from every case)."""
    return "–" if math.isnan(value) else f"{scale * value:.{digits}f}"


def _size_label(collected: dict[str, Any], p: str) -> str:
    info = collected["sizes"].get(p)
    return p + ("²" if info["spatial_dims"] == 2 else "³") if info else p


def sweep_markdown(collected: dict[str, Any]) -> str:
    """Tables per budget: mean DSC per setting and patch size (± standard deviation over seeds) with the empty-pair
    share, the paired differences if collected, then per setting and size the per-class DSC (all held-out cases,
    and those containing the class), HD95 and volume."""
    classes, sizes, order = collected["classes"], collected["sizes"], collected["patch_sizes"]
    shown = [p for p in order if p in sizes]
    voxels = sorted({sizes[p]["voxels_per_step"] for p in shown})
    lines = [
        f"Equal compute: {', '.join(map(str, voxels))} voxels per step at every patch size (batch × patch voxels). "
        "Empty pairs: the share of (training patch, foreground class) pairs without the class, over the first "
        "epoch's patches; DSC and HD95 on the held-out cases (val), mean over the seeds that have finished.",
        "",
        "| patch | batch | voxels per step | empty (patch, class) pairs % | ",
    ]
    lines[-1] += " | ".join(f"{c} absent %" for c in classes) + " |"
    lines.append("|---|---:|---:|---:|" + "---:|" * len(classes))
    for p in shown:
        s = sizes[p]
        lines.append(
            f"| {_size_label(collected, p)} | {s['batch_size']} | {s['voxels_per_step']} | "
            f"{100 * s['empty_pairs']:.1f} | " + " | ".join(f"{100 * v:.1f}" for v in s["class_absent"]) + " |"
        )
    lines.append("")
    for steps, settings in collected["runs"].items():
        for key, title in METRICS:
            lines += [f"### {steps} steps: {title} (± standard deviation over seeds)", ""]
            lines.append("| setting | " + " | ".join(_size_label(collected, p) for p in order) + " |")
            lines.append("|---|" + "---:|" * len(order))
            for setting, per_size in settings.items():
                cells = []
                for p in order:
                    runs = per_size.get(p, [])
                    m, sd = mean_std([r[key] for r in runs])
                    cells.append(_cell(m) + (f" ± {100 * sd:.1f}" if len(runs) > 1 else ""))
                lines.append(f"| `{setting}` | " + " | ".join(cells) + " |")
            lines.append("")
        if "paired" in collected:
            lines += _paired_markdown(collected, steps)
        lines += [f"### {steps} steps: per class", ""]
        lines.append(
            "| setting | patch | seeds | mean DSC % | "
            + " | ".join([f"{c} DSC %" for c in classes] + [f"{c} DSC % where present" for c in classes])
            + " | mean HD95 | "
            + " | ".join(f"{c} pred/true vol." for c in classes)
            + " |"
        )
        lines.append("|---|---|---:|---:|" + "---:|" * (3 * len(classes) + 1))
        for setting, per_size in settings.items():
            for p in order:
                runs = per_size.get(p, [])
                if not runs:
                    continue
                k = range(len(classes))
                dice = [mean_std([r["class_dice"][i] for r in runs])[0] for i in k]
                present = [mean_std([r["class_dice_present"][i] for r in runs])[0] for i in k]
                ratio = [mean_std([r["volume_ratio"][i] for r in runs])[0] for i in k]
                lines.append(
                    f"| `{setting}` | {_size_label(collected, p)} | {len(runs)} | "
                    f"{_cell(mean_std([r['dice'] for r in runs])[0])} | "
                    + " | ".join(_cell(v) for v in dice + present)
                    + f" | {_cell(mean_std([r['hd95'] for r in runs])[0], 1.0)} | "
                    + " | ".join(_cell(v, 1.0, 2) for v in ratio)
                    + " |"
                )
        lines.append("")
    return "\n".join(lines)


def plot_sweep(collected: dict[str, Any], path: Path) -> None:
    """Per budget, one panel per :data:`METRICS`: the score against patch size, one line per setting (mean over
    seeds, seeds as dots), and the share of empty (patch, class) pairs on a second axis; with a paired comparison
    (:func:`paired_differences`) a last panel of the per-seed differences (dots) and their mean (line) per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = collected["patch_sizes"]
    budgets = list(collected["runs"])
    paired = collected.get("paired")
    columns = len(METRICS) + (paired is not None)
    fig, axes = plt.subplots(len(budgets), columns, figsize=(6.5 * columns, 4.5 * len(budgets)), squeeze=False)
    xs = np.arange(len(order))
    labels = [_size_label(collected, p) for p in order]
    empty = [collected["sizes"].get(p, {}).get("empty_pairs", np.nan) * 100 for p in order]
    for row, steps in zip(axes, budgets, strict=True):
        for ax, (key, title) in zip(row, METRICS):
            settings = collected["runs"][steps]
            for j, (setting, per_size) in enumerate(settings.items()):
                means = [mean_std([r[key] for r in per_size.get(p, [])])[0] * 100 for p in order]
                ax.plot(xs, means, "-o", color=f"C{j % 10}", label=setting, markersize=4)
                for i, p in enumerate(order):
                    seeds = [100 * r[key] for r in per_size.get(p, []) if r[key] is not None]
                    x = xs[i] + 0.04 * (j - (len(settings) - 1) / 2)  # the settings' dots centred on the tick
                    ax.plot([x] * len(seeds), seeds, ".", color=f"C{j % 10}", alpha=0.6)
            ax.set_xticks(xs, labels)
            ax.set_xlabel("patch size (equal voxels per step)")
            ax.set_ylabel(f"{title} (val); dots: seeds")
            ax.set_title(f"{steps} steps: {title}")
            ax.set_ylim(0, 100)
            twin = ax.twinx()
            twin.plot(xs, empty, "k--x", label="empty (patch, class) pairs")
            twin.set_ylabel("empty (patch, class) pairs %")
            twin.set_ylim(0, 100)
            twin.legend(loc="lower right", fontsize=7)
        row[0].legend(loc="lower left", fontsize=7)
        if paired is not None:
            _plot_paired(row[-1], paired, steps, order, labels)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_paired(ax: Any, paired: dict[str, Any], steps: str, order: list[str], labels: list[str]) -> None:
    """One panel: per metric, the per-seed differences ``setting − reference`` (dots) and their mean (line)."""
    per_size = paired["differences"].get(steps, {})
    xs = np.arange(len(order))
    ax.axhline(0.0, color="k", linewidth=0.8)
    for j, (key, title) in enumerate(METRICS):
        means = []
        for i, p in enumerate(order):
            values = [100 * v for v in per_size.get(p, {}).get(key, []) if v is not None]
            means.append(float(np.mean(values)) if values else np.nan)
            x = xs[i] + 0.08 * (j - (len(METRICS) - 1) / 2)
            ax.plot([x] * len(values), values, ".", color=f"C{j}", alpha=0.7)
        ax.plot(xs, means, "-o", color=f"C{j}", markersize=4, label=title)
    ax.set_xticks(xs, labels)
    ax.set_xlabel("patch size (equal voxels per step)")
    ax.set_ylabel("DSC points; dots: seeds")
    ax.set_title(f"{steps} steps: {paired['setting']} − {paired['reference']}")
    ax.legend(loc="lower left", fontsize=7)
