"""Run and report the CPU-budget comparison of nnU-Net trainers: trainer x seed x configuration, on fold 0.

``run`` launches ``nnUNetv2_train DATASET CONFIGURATION 0 -tr TRAINER -device cpu --c`` for every run of the plan,
``--jobs`` at a time (two by default), each with one torch thread (``OMP_NUM_THREADS=1``), single-threaded
augmentation (``nnUNet_n_proc_DA=0``, which makes seeded runs reproducible) and ``MONAI_MIME_SEED=<seed>``. Each
seed has a results folder of its own, ``RESULTS/seed<S>`` (nnU-Net names its output folder after trainer, plans
and configuration only). ``--c`` makes every run resumable: an interrupted batch continues where it stopped, a
finished run (``validation/summary.json`` present) is skipped, so a batch can span sessions.

``report`` reads every run's ``validation/summary.json`` (nnU-Net's own final validation) and the training log
stored in its checkpoint (``checkpoint["logging"]``: loss and pseudo Dice per epoch) and writes

* a Markdown table per configuration: per-class Dice, mean ± population standard deviation over seeds, the paired
  difference of the mean Dice against nnU-Net's default trainer (same configuration, same seed; mean ± SD and every
  seed's), and one row per run with its wall time;
* a figure of the training curves: pseudo Dice (nnU-Net's per-epoch foreground mean) and training loss per epoch,
  one colour per trainer, one thin line per seed (each loss on its own scale: nnU-Net's Dice + CE runs from about
  1 towards -1, Mime's from about 0).

Setup (once; see README.md): ``nnUNetv2_plan_and_preprocess -d 27 -c 2d``, ``monai-mime nnunet-cpu-plans 27``,
``splits_final.json``; then::

    python examples/nnunet/compare.py run --dataset 27 --results /path/to/results
    python examples/nnunet/compare.py report --results /path/to/results --out docs/results/nnunet_cpu_budget
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT = "nnUNetTrainer_CPUBudget"
#: The comparison of the nnU-Net results (configuration, trainer, seeds).
PLAN: list[tuple[str, str, tuple[int, ...]]] = [
    ("2d_cpu128", DEFAULT, (0, 1, 2)),
    ("2d_cpu128", "nnUNetTrainerMimeCE_CPUBudget", (0, 1, 2)),
    ("2d_cpu128", "nnUNetTrainerMime_CPUBudget", (0, 1)),
    ("2d_cpu64", DEFAULT, (0, 1, 2)),
    ("2d_cpu64", "nnUNetTrainerMimeCE_CPUBudget", (0, 1, 2)),
]
#: Added with --with-fixed-ce.
FIXED_CE = ("2d_cpu128", "nnUNetTrainerMimeFixedCE_CPUBudget", (0, 1))


@dataclass(frozen=True)
class Run:
    """One training run: configuration, trainer, seed."""

    configuration: str
    trainer: str
    seed: int

    def folder(self, results: Path, dataset: str, plans: str = "nnUNetPlans") -> Path:
        """nnU-Net's output folder of this run under ``results/seed<S>``."""
        return results / f"seed{self.seed}" / dataset / f"{self.trainer}__{plans}__{self.configuration}" / "fold_0"


@dataclass
class RunResult:
    """What ``report`` reads of one run."""

    run: Run
    dice: dict[str, float]  # class name -> Dice of nnU-Net's final validation
    mean_dice: float
    wall_s: float | None
    logging: dict[str, list[Any]] = field(default_factory=dict)


def parse_runs(specs: list[str] | None, with_fixed_ce: bool) -> list[Run]:
    """The runs of the plan, or of ``CONFIGURATION:TRAINER:SEED,SEED`` specs."""
    plan = list(PLAN) + ([FIXED_CE] if with_fixed_ce else [])
    if specs:
        plan = []
        for spec in specs:
            try:
                configuration, trainer, seeds = spec.split(":")
                plan.append((configuration, trainer, tuple(int(s) for s in seeds.split(","))))
            except ValueError:
                raise SystemExit(f"--runs {spec!r}: expected CONFIGURATION:TRAINER:SEED[,SEED...]") from None
    return [Run(c, t, s) for c, t, seeds in plan for s in seeds]


def dataset_folder_name(dataset: str) -> str:
    """``Dataset027_ACDC`` for ``27``: the folder of that id under ``$nnUNet_preprocessed`` (or ``dataset`` as is)."""
    if not dataset.isdigit():
        return dataset
    root = Path(os.environ.get("nnUNet_preprocessed", ""))
    found = sorted(p.name for p in root.glob(f"Dataset{int(dataset):03d}_*")) if root.name else []
    if len(found) != 1:
        raise SystemExit(f"dataset {dataset}: {len(found)} matches in $nnUNet_preprocessed; give the full name")
    return found[0]


def train(run: Run, results: Path, dataset: str, extra_env: dict[str, str]) -> tuple[Run, int, float]:
    """Run (or resume) one training with nnU-Net's command; its log goes next to the run's output folder."""
    folder = run.folder(results, dataset)
    if (folder / "validation" / "summary.json").is_file():
        return run, 0, 0.0
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **extra_env,
        "nnUNet_results": str(results / f"seed{run.seed}"),
        "MONAI_MIME_SEED": str(run.seed),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "nnUNet_n_proc_DA": "0",
    }
    command = ["nnUNetv2_train", dataset, run.configuration, "0", "-tr", run.trainer, "-device", "cpu", "--c"]
    start = time.time()
    with open(folder.parent / f"compare_fold_0_{time.strftime('%Y%m%d_%H%M%S')}.log", "w") as log:
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    elapsed = time.time() - start
    info_file = folder / "compare_wall_time.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {"wall_s": 0.0, "calls": 0}
    info = {"wall_s": info["wall_s"] + elapsed, "calls": info["calls"] + 1, "last_return_code": code}
    info_file.write_text(json.dumps(info))
    return run, code, elapsed


def command_run(args: argparse.Namespace) -> int:
    runs = parse_runs(args.runs, args.with_fixed_ce)
    dataset = dataset_folder_name(args.dataset)
    from nnunet_trainers.discovery import ext_trainer_path

    extra_env = {"nnUNet_extTrainer": ext_trainer_path(existing=os.environ.get("nnUNet_extTrainer"))}
    for run in runs:
        print(f"planned: {run.configuration} {run.trainer} seed {run.seed}")
    if args.dry_run:
        return 0
    failed = 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for run, code, elapsed in pool.map(lambda r: train(r, args.results, dataset, extra_env), runs):
            failed += code != 0
            print(f"{'FAILED' if code else 'done'}: {run} in {elapsed / 60:.1f} min", flush=True)
    return 1 if failed else 0


def collect(results: Path, dataset: str, runs: list[Run]) -> list[RunResult]:
    """The finished runs among ``runs``: Dice per class from ``validation/summary.json``, the checkpoint's log."""
    import torch

    collected = []
    for run in runs:
        folder = run.folder(results, dataset)
        summary_file = folder / "validation" / "summary.json"
        if not summary_file.is_file():
            continue
        summary = json.loads(summary_file.read_text())
        labels = json.loads((folder.parent / "dataset.json").read_text())["labels"]
        names = {str(v): k for k, v in labels.items() if not isinstance(v, list)}
        dice = {names.get(k, k): float(v["Dice"]) for k, v in summary["mean"].items()}
        checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        info_file = folder / "compare_wall_time.json"
        wall = json.loads(info_file.read_text())["wall_s"] if info_file.is_file() else None
        collected.append(
            RunResult(run, dice, float(summary["foreground_mean"]["Dice"]), wall, dict(checkpoint["logging"]))
        )
    return collected


def _mean_sd(values: list[float]) -> str:
    sd = f" ± {np.std(values):.3f}" if len(values) > 1 else ""  # population SD, as the sweep's tables
    return f"{np.mean(values):.3f}{sd}"


def tables(results: list[RunResult]) -> str:
    """Markdown: per configuration, trainers' mean ± SD over seeds and the paired difference against the default;
    then every run."""
    lines = []
    for configuration in dict.fromkeys(r.run.configuration for r in results):
        rows = [r for r in results if r.run.configuration == configuration]
        classes = list(rows[0].dice)
        default = {r.run.seed: r.mean_dice for r in rows if r.run.trainer == DEFAULT}
        lines += [
            f"**{configuration}** (mean ± population SD over seeds; paired difference of the mean Dice: trainer − "
            f"{DEFAULT} at the same seed, mean ± SD, then per seed)",
            "",
            f"| trainer | seeds | {' | '.join(classes)} | mean Dice | paired difference |",
            "|---|---|" + "---:|" * (len(classes) + 2),
        ]
        for trainer in dict.fromkeys(r.run.trainer for r in rows):
            own = [r for r in rows if r.run.trainer == trainer]
            diffs = [r.mean_dice - default[r.run.seed] for r in own if r.run.seed in default]
            per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
            paired = "—" if trainer == DEFAULT or not diffs else f"{_mean_sd(diffs)} ({per_seed})"
            per_class = " | ".join(_mean_sd([r.dice[c] for r in own]) for c in classes)
            seeds = ",".join(str(r.run.seed) for r in own)
            lines.append(f"| `{trainer}` | {seeds} | {per_class} | {_mean_sd([r.mean_dice for r in own])} | {paired} |")
        lines.append("")
    lines += [
        "Every run:",
        "",
        "| configuration | trainer | seed | Dice per class | mean | wall time |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in results:
        wall = "—" if r.wall_s is None else f"{r.wall_s / 60:.1f} min"
        per_class = " / ".join(f"{v:.3f}" for v in r.dice.values())
        lines.append(
            f"| {r.run.configuration} | `{r.run.trainer}` | {r.run.seed} | {per_class} | {r.mean_dice:.3f} | {wall} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(results: list[RunResult], path: Path) -> None:
    """Pseudo Dice and training loss per epoch; a column per configuration, a colour per trainer, a line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configurations = list(dict.fromkeys(r.run.configuration for r in results))
    trainers = list(dict.fromkeys(r.run.trainer for r in results))
    colours = {t: plt.get_cmap("tab10")(i) for i, t in enumerate(trainers)}
    fig, axes = plt.subplots(2, len(configurations), figsize=(5.5 * len(configurations), 7), squeeze=False)
    for column, configuration in enumerate(configurations):
        for r in (r for r in results if r.run.configuration == configuration):
            for row, key in enumerate(("mean_fg_dice", "train_losses")):
                values = r.logging.get(key, [])
                axes[row, column].plot(range(len(values)), values, lw=0.8, color=colours[r.run.trainer])
        axes[0, column].set_title(configuration)
        axes[0, column].set_ylim(0, 1)
        axes[0, column].set_ylabel("pseudo Dice (foreground mean)")
        axes[1, column].set_ylabel("training loss")
        axes[1, column].set_xlabel("epoch")
    handles = {t: plt.Line2D([], [], color=colours[t]) for t in trainers}
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(3, len(trainers)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def command_report(args: argparse.Namespace) -> int:
    dataset = dataset_folder_name(args.dataset)
    results = collect(args.results, dataset, parse_runs(args.runs, args.with_fixed_ce))
    if not results:
        raise SystemExit(f"no finished run under {args.results} (validation/summary.json)")
    text = tables(results)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        title = f"# nnU-Net trainers at a CPU budget: {dataset}, fold 0\n\nWritten by `compare.py report`.\n\n"
        args.out.with_suffix(".md").write_text(title + text)
        plot_curves(results, args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.png')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("run", command_run), ("report", command_report)):
        p = sub.add_parser(name)
        p.add_argument("--dataset", default="27", help="dataset id or name (default %(default)s)")
        p.add_argument("--results", type=Path, required=True, help="results root; seed S goes to RESULTS/seed<S>")
        p.add_argument("--runs", nargs="+", metavar="C:T:S", help="CONFIGURATION:TRAINER:SEED,SEED (default: plan)")
        p.add_argument("--with-fixed-ce", action="store_true", help="add nnUNetTrainerMimeFixedCE_CPUBudget at 128²")
        p.set_defaults(func=func)
        if name == "run":
            p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default 2)")
            p.add_argument("--dry-run", action="store_true", help="list the runs only")
        else:
            p.add_argument("--out", type=Path, help="write OUT.md (tables) and OUT.png (curves)")
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
