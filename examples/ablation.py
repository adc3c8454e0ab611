"""Which loss settings make patch training work? Mime's weight modes against the Dice variants and cross-entropy,
at one patch size or along a patch-size axis.

Every setting trains the same network from the same seed with the same budget (``examples/patch_training/``);
each (budget, seed, setting[, patch size]) is one run with its own folder, skipped when its ``results.json``
exists, so an interrupted ablation resumes where it stopped. Training uses the dataset's "train" list, scores use
"val"::

    python examples/ablation.py --data /path/to/Dataset027_ACDC --steps 1500,3000 --seeds 0,1 \\
        --out results/ablation_acdc
    python examples/ablation.py --out results/ablation_synthetic        # the built-in rare-class data

The summary (``ablation.md``, ``ablation.json``, ``ablation.png``) gives, per budget and setting, the mean and
per-class Dice and HD95 (paper conventions), the per-class Dice over the held-out images that contain the class
(where an absent class scoring 1 cannot hide a class that is never predicted) and the predicted/true volume ratio
per class, averaged over the seeds that have finished (± the spread between seeds).

The patch-size axis (``--patch-sizes``, :mod:`patch_training.sweep`) trains every setting at each size with the
same number of voxels per step (``--batch-size`` at the first size; the batch grows as the patch shrinks) and adds
the share of empty (patch, class) pairs; its summary is ``sweep.md``, ``sweep.json`` and ``sweep.png``::

    python examples/ablation.py --data /path/to/Dataset027_ACDC --patch-sizes 128,64,32 --steps 1500 \\
        --seeds 0,1 --out results/sweep_acdc
    python examples/ablation.py --patch-sizes 64,32,16 --steps 1000 --seeds 0,1 --out results/sweep_synthetic
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from patch_training import ExperimentConfig, ExperimentError, prepare_data, run_experiment  # noqa: E402
from patch_training.runs import load_scores, mean_std, run_name  # noqa: E402
from patch_training.sweep import (  # noqa: E402
    collect_sweep,
    constant_voxel_batches,
    plot_sweep,
    record_class_absence,
    sweep_markdown,
)

DEFAULT_SETTINGS = (
    "ce",
    "dice",
    "vnet",
    "gdl",
    "mime:mode=mean",
    "mime:mode=dice:overlap=0.5",
    "mime:mode=balance:gamma=0.5",
    "mime_adaptive:mode=dice:overlap=0.5",
    "mime_adaptive:mode=balance:gamma=0.5",
    "dice+ce",
    "dice+ce:include_background=false",
)
#: The patch-size sweep's settings: the adaptive and the paper's fixed Mime, the adaptive Mime + CE, the Dice variants,
#: cross-entropy, and Dice + CE as MONAI's ``DiceCELoss`` (background included) and as nnU-Net's (excluded).
SWEEP_SETTINGS = (
    "mime_adaptive",
    "mime",
    "mime_adaptive+ce",
    "dice",
    "vnet",
    "gdl",
    "ce",
    "dice+ce",
    "dice+ce:include_background=false",
)
#: The sweep's paired comparison (setting, reference): Mime + CE against the Dice + CE users train with today.
SWEEP_PAIRED = ("mime_adaptive+ce", "dice+ce")


def run_all(
    config: ExperimentConfig,
    settings: list[str],
    budgets: list[int],
    seeds: list[int],
    out: Path,
    patch_sizes: list[int] | None = None,
) -> None:
    """Train and evaluate every (budget, seed, [patch size,] setting) that has no ``results.json`` yet.

    With ``patch_sizes`` every size trains with the batch of :func:`constant_voxel_batches` (``config.batch_size`` at
    the first size) and its share of empty (patch, class) pairs is recorded once per size."""
    data = prepare_data(config)
    sizes: list[int | None] = list(patch_sizes) if patch_sizes else [None]
    batches = constant_voxel_batches(patch_sizes, config.batch_size, config.spatial_dims) if patch_sizes else [0]
    if patch_sizes:
        voxels = config.batch_size * patch_sizes[0] ** config.spatial_dims
        print(
            f"equal compute: {voxels} voxels per step at every patch size ("
            + ", ".join(f"{b} × {p}^{config.spatial_dims}" for p, b in zip(patch_sizes, batches, strict=True))
            + ")",
            flush=True,
        )
    for steps in budgets:
        for seed in seeds:
            for patch, batch in zip(sizes, batches, strict=True):
                sized = config
                if patch is not None:
                    sized = config.replace(patch_size=(patch,) * config.spatial_dims, batch_size=batch, seed=seed)
                    record_class_absence(data, sized, out, patch)
                for setting in settings:
                    folder = out / run_name(steps, seed, setting, patch=patch)
                    if (folder / "results.json").exists():
                        continue
                    epochs = steps // config.steps_per_epoch
                    size_text = "" if patch is None else f", patch {patch} × batch {batch}"
                    print(f"== {setting}: {steps} steps, seed {seed}{size_text}", flush=True)
                    run_experiment(
                        sized.replace(losses=[setting], seed=seed, epochs=epochs, out=str(folder), figure=False),
                        data=data,
                    )
                    summarize(out, settings, budgets, seeds, patch_sizes)


def _collect(out: Path, settings: list[str], budgets: list[int], seeds: list[int]) -> dict[str, Any]:
    """Per budget and setting: the per-seed summaries of the finished runs."""
    table: dict[str, Any] = {}
    classes: list[str] = []
    for steps in budgets:
        for setting in settings:
            runs = []
            for seed in seeds:
                found = load_scores(out / run_name(steps, seed, setting))
                if found is not None:
                    classes, scores = found
                    runs.append({"seed": seed, **scores})
            if runs:
                table.setdefault(str(steps), {})[setting] = runs
    return {"classes": classes, "runs": table}


def markdown(collected: dict[str, Any]) -> str:
    classes = collected["classes"]
    lines = []
    for steps, settings in collected["runs"].items():
        lines += [
            f"### {steps} steps",
            "",
            "| setting | seeds | mean DSC % | "
            + " | ".join(f"{c} DSC %" for c in classes)
            + " | "
            + " | ".join(f"{c} DSC % where present" for c in classes)
            + " | mean HD95 | "
            + " | ".join(f"{c} pred/true vol." for c in classes)
            + " |",
            "|---|---:|---:|" + "---:|" * (2 * len(classes)) + "---:|" + "---:|" * len(classes),
        ]
        for setting, runs in settings.items():
            dice_m, dice_s = mean_std([r["dice"] for r in runs])
            hd_m, _ = mean_std([r["hd95"] for r in runs])
            per_class = [mean_std([r["class_dice"][k] for r in runs])[0] for k in range(len(classes))]
            present = [mean_std([r["class_dice_present"][k] for r in runs])[0] for k in range(len(classes))]
            ratios = [mean_std([r["volume_ratio"][k] for r in runs])[0] for k in range(len(classes))]
            spread = f" ± {100 * dice_s:.1f}" if len(runs) > 1 else ""
            lines.append(
                f"| `{setting}` | {len(runs)} | {100 * dice_m:.1f}{spread} | "
                + " | ".join(f"{100 * d:.1f}" for d in per_class + present)
                + f" | {hd_m:.1f} | "
                + " | ".join(f"{r:.2f}" for r in ratios)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(collected: dict[str, Any], path: Path) -> None:
    """Bars per setting and budget (dots: seeds): mean Dice, the worst class's Dice over the images that contain
    it (a starved class shows here), and mean HD95."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        "mean Dice % (val)": lambda r: 100 * r["dice"],
        "worst class: Dice % where present (val)": lambda r: (
            100 * min(d for d in r["class_dice_present"] if d is not None)
        ),
        "mean HD95 (val)": lambda r: r["hd95"],
    }
    budgets = list(collected["runs"])
    settings = list(dict.fromkeys(s for b in budgets for s in collected["runs"][b]))
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 0.45 * len(settings) + 2), sharey=True)
    height = 0.8 / max(1, len(budgets))
    for i, steps in enumerate(budgets):
        for j, setting in enumerate(settings):
            runs = collected["runs"][steps].get(setting, [])
            for ax, value in zip(axes, panels.values()):
                values = [value(r) for r in runs if r["dice"] is not None]
                if values:
                    ax.barh(
                        j + i * height,
                        np.mean(values),
                        height,
                        color=f"C{i}",
                        label=f"{steps} steps" if j == 0 else None,
                    )
                    ax.plot(values, [j + i * height] * len(values), "k.", markersize=4)
    axes[0].set_yticks(np.arange(len(settings)) + height * (len(budgets) - 1) / 2, settings)
    axes[0].invert_yaxis()
    for ax, title in zip(axes, panels):
        ax.set_xlabel(title + "; dots: seeds")
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(
    out: Path, settings: list[str], budgets: list[int], seeds: list[int], patch_sizes: list[int] | None = None
) -> Path | None:
    """Write the summary of the finished runs (``ablation.*``, or ``sweep.*`` for a patch-size axis); its
    markdown path, or None before any run has finished."""
    if patch_sizes:
        paired = SWEEP_PAIRED if set(SWEEP_PAIRED) <= set(settings) else None
        sweep = collect_sweep(out, settings, budgets, seeds, patch_sizes, paired)
        if not sweep["runs"]:
            return None
        (out / "sweep.json").write_text(json.dumps(sweep, indent=1))
        (out / "sweep.md").write_text(sweep_markdown(sweep))
        plot_sweep(sweep, out / "sweep.png")
        return out / "sweep.md"
    collected = _collect(out, settings, budgets, seeds)
    if not collected["runs"]:
        return None
    (out / "ablation.json").write_text(json.dumps(collected, indent=1))
    (out / "ablation.md").write_text(markdown(collected))
    plot(collected, out / "ablation.png")
    return out / "ablation.md"


def _int_list(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="nnU-Net raw dataset folder (default: built-in synthetic data)")
    parser.add_argument(
        "--settings",
        default=None,
        help=f"comma-separated loss specs (default: {','.join(DEFAULT_SETTINGS)}; with --patch-sizes: "
        f"{','.join(SWEEP_SETTINGS)})",
    )
    parser.add_argument("--steps", default="1500", help="training budgets in steps, comma-separated")
    parser.add_argument("--seeds", default="0", help="seeds, comma-separated")
    parser.add_argument("--patch-size", default="128", help="2D patch size (default 128)")
    parser.add_argument(
        "--patch-sizes",
        default=None,
        help="a patch-size axis, e.g. 128,64,32: every setting at every size, equal voxels per step",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="patches per step (with --patch-sizes: at the first)")
    parser.add_argument("--steps-per-epoch", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (0: torch's default)")
    parser.add_argument("--out", default="results/ablation")
    parser.add_argument("--summarize-only", action="store_true", help="rebuild the tables from finished runs")
    args = parser.parse_args(argv)
    patch_sizes = _int_list(args.patch_sizes) if args.patch_sizes else None
    default = SWEEP_SETTINGS if patch_sizes else DEFAULT_SETTINGS
    settings = [s.strip() for s in (args.settings or ",".join(default)).split(",") if s.strip()]
    budgets = _int_list(args.steps)
    seeds = _int_list(args.seeds)
    out = Path(args.out)
    if not args.summarize_only:
        uneven = [steps for steps in budgets if steps < 1 or steps % args.steps_per_epoch]
        if uneven:
            parser.error(
                f"--steps {','.join(map(str, uneven))}: every budget must be a positive multiple of --steps-per-epoch "
                f"({args.steps_per_epoch}), or the runs would train fewer steps than their folders say"
            )
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        size = tuple(_int_list(args.patch_size))
        config = ExperimentConfig(
            data=args.data,
            patch_size=size * 2 if len(size) == 1 else size,
            batch_size=args.batch_size,
            steps_per_epoch=args.steps_per_epoch,
            threads=args.threads,
            checkpoints=False,
            progress=False,
        )
        try:
            run_all(config, settings, budgets, seeds, out, patch_sizes)
        except ExperimentError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    summary = summarize(out, settings, budgets, seeds, patch_sizes)
    print(summary.read_text() if summary is not None else "no finished run yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
