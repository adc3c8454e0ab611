"""Which a/b make Mime work? An ablation of Mime's weight modes against the Dice variants and cross-entropy.

Every setting trains the same network from the same seed with the same budget (``examples/patch_training/``);
each (budget, seed, setting) is one run with its own folder, skipped when its ``results.json`` exists, so an
interrupted ablation resumes where it stopped. Training uses the dataset's "train" list, scores use "val"::

    python examples/ablation.py --data ../shared/data/Dataset027_ACDC --steps 1500,3000 --seeds 0,1 \\
        --out results/ablation_acdc
    python examples/ablation.py --out results/ablation_synthetic        # the built-in rare-class data

The summary (``ablation.md``, ``ablation.json``, ``ablation.png``) gives, per budget and setting, the mean and
per-class Dice and HD95 (paper conventions), the per-class Dice over the held-out images that contain the class
(where an absent class scoring 1 cannot hide a class that is never predicted) and the predicted/true volume ratio
per class, averaged over the seeds that have finished (± the spread between seeds).
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
)


def run_name(steps: int, seed: int, setting: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in setting)
    return f"steps{steps}_seed{seed}/{safe}"


def run_all(config: ExperimentConfig, settings: list[str], budgets: list[int], seeds: list[int], out: Path) -> None:
    """Train and evaluate every (budget, seed, setting) that has no ``results.json`` yet."""
    data = prepare_data(config)
    for steps in budgets:
        for seed in seeds:
            for setting in settings:
                folder = out / run_name(steps, seed, setting)
                if (folder / "results.json").exists():
                    continue
                epochs = max(1, steps // config.steps_per_epoch)
                print(f"== {setting}: {steps} steps, seed {seed}", flush=True)
                run_experiment(
                    config.replace(losses=[setting], seed=seed, epochs=epochs, out=str(folder), figure=False),
                    data=data,
                )
                summarize(out, settings, budgets, seeds)


def _collect(out: Path, settings: list[str], budgets: list[int], seeds: list[int]) -> dict[str, Any]:
    """Per budget and setting: the per-seed summaries of the finished runs."""
    table: dict[str, Any] = {}
    classes: list[str] = []
    for steps in budgets:
        for setting in settings:
            runs = []
            for seed in seeds:
                path = out / run_name(steps, seed, setting) / "results.json"
                if path.exists():
                    result = json.loads(path.read_text())
                    classes = result["data"]["classes"][1:]
                    entry = next(iter(result["losses"].values()))
                    runs.append({"seed": seed, **_scores(entry)})
            if runs:
                table.setdefault(str(steps), {})[setting] = runs
    return {"classes": classes, "runs": table}


def _scores(entry: dict[str, Any]) -> dict[str, Any]:
    per_class = entry["per_class"]
    cases = entry["per_case"]
    present = [[case["dice"][k] for case in cases if case["gt_counts"][k] > 0] for k in range(len(per_class))]
    return {
        "dice": entry["mean"]["dice"],
        "hd95": entry["mean"]["hd95"],
        "class_dice": [v["dice_mean"] for v in per_class.values()],
        "class_dice_present": [float(np.mean(d)) if d else None for d in present],
        "class_hd95": [v["hd95_mean"] for v in per_class.values()],
        "volume_ratio": [v["volume_ratio"] for v in per_class.values()],
        "threshold": entry.get("threshold"),
        "train_time_s": entry.get("train_time_s"),
    }


def _mean_std(values: list[float | None]) -> tuple[float, float]:
    finite = np.array([v for v in values if v is not None], dtype=float)
    return (float(finite.mean()), float(finite.std())) if finite.size else (float("nan"), float("nan"))


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
            dice_m, dice_s = _mean_std([r["dice"] for r in runs])
            hd_m, _ = _mean_std([r["hd95"] for r in runs])
            per_class = [_mean_std([r["class_dice"][k] for r in runs])[0] for k in range(len(classes))]
            present = [_mean_std([r["class_dice_present"][k] for r in runs])[0] for k in range(len(classes))]
            ratios = [_mean_std([r["volume_ratio"][k] for r in runs])[0] for k in range(len(classes))]
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


def summarize(out: Path, settings: list[str], budgets: list[int], seeds: list[int]) -> None:
    collected = _collect(out, settings, budgets, seeds)
    if not collected["runs"]:
        return
    (out / "ablation.json").write_text(json.dumps(collected, indent=1))
    (out / "ablation.md").write_text(markdown(collected))
    plot(collected, out / "ablation.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="nnU-Net raw dataset folder (default: built-in synthetic data)")
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help="comma-separated loss specs")
    parser.add_argument("--steps", default="1500", help="training budgets in steps, comma-separated")
    parser.add_argument("--seeds", default="0", help="seeds, comma-separated")
    parser.add_argument("--patch-size", default="128", help="2D patch size (default 128)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (0: torch's default)")
    parser.add_argument("--out", default="results/ablation")
    parser.add_argument("--summarize-only", action="store_true", help="rebuild the tables from finished runs")
    args = parser.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]  # a spec's options use ':'
    budgets = [int(s) for s in args.steps.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        size = tuple(int(p) for p in args.patch_size.split(","))
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
            run_all(config, settings, budgets, seeds, out)
        except ExperimentError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    summarize(out, settings, budgets, seeds)
    print((out / "ablation.md").read_text() if (out / "ablation.md").exists() else "no finished run yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
