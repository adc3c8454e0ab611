"""examples/nnunet/compare.py: the plan of runs, and the report from finished runs' nnU-Net outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

COMPARE = Path(__file__).resolve().parents[1] / "examples" / "nnunet" / "compare.py"
DATASET = "Dataset027_ACDC"
LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nnunet_compare", COMPARE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


compare = _load()


def _finished_run(results: Path, run: Any, dice: list[float], wall_s: float, losses: list[float]) -> None:
    """The files nnU-Net leaves in a finished run's folder that the report reads (same keys and layout)."""
    folder = run.folder(results, DATASET)
    (folder / "validation").mkdir(parents=True)
    summary = {
        "foreground_mean": {"Dice": sum(dice) / 3},
        "mean": {str(k + 1): {"Dice": d, "IoU": d} for k, d in enumerate(dice)},
    }
    (folder / "validation" / "summary.json").write_text(json.dumps(summary))
    (folder.parent / "dataset.json").write_text(json.dumps({"labels": LABELS}))
    logging = {"train_losses": losses, "mean_fg_dice": [0.1 * (i + 1) for i in range(len(losses))]}
    torch.save({"logging": logging, "current_epoch": len(losses)}, folder / "checkpoint_final.pth")
    (folder / "compare_wall_time.json").write_text(json.dumps({"wall_s": wall_s, "calls": 1}))


def test_plan_is_the_published_comparison() -> None:
    runs = compare.parse_runs(None, with_fixed_ce=False)
    count = {(r.configuration, r.trainer): 0 for r in runs}
    for r in runs:
        count[(r.configuration, r.trainer)] += 1
    assert count == {
        ("2d_cpu128", "nnUNetTrainer_CPUBudget"): 3,
        ("2d_cpu128", "nnUNetTrainerMimeCE_CPUBudget"): 3,
        ("2d_cpu128", "nnUNetTrainerMime_CPUBudget"): 2,
        ("2d_cpu64", "nnUNetTrainer_CPUBudget"): 3,
        ("2d_cpu64", "nnUNetTrainerMimeCE_CPUBudget"): 3,
    }
    assert len(compare.parse_runs(None, with_fixed_ce=True)) == len(runs) + 2
    assert compare.parse_runs(["2d_cpu64:T:3,4"], False) == [
        compare.Run("2d_cpu64", "T", 3),
        compare.Run("2d_cpu64", "T", 4),
    ]
    with pytest.raises(SystemExit, match="expected CONFIGURATION:TRAINER:SEED"):
        compare.parse_runs(["2d_cpu64:T"], False)
    # each seed has its own results root (nnU-Net's folder name has no seed)
    a, b = compare.Run("2d_cpu128", "T", 0), compare.Run("2d_cpu128", "T", 1)
    assert a.folder(Path("/r"), DATASET) == Path("/r/seed0/Dataset027_ACDC/T__nnUNetPlans__2d_cpu128/fold_0")
    assert a.folder(Path("/r"), DATASET) != b.folder(Path("/r"), DATASET)


def test_report_tables_paired_differences_and_figure(tmp_path: Path) -> None:
    default, mime = compare.DEFAULT, "nnUNetTrainerMimeCE_CPUBudget"
    runs = [compare.Run("2d_cpu128", t, s) for t in (default, mime) for s in (0, 1)]
    _finished_run(tmp_path, runs[0], [0.7, 0.8, 0.9], 600.0, [0.5, 0.1])
    _finished_run(tmp_path, runs[1], [0.6, 0.8, 0.9], 660.0, [0.5, 0.2])
    _finished_run(tmp_path, runs[2], [0.7, 0.8, 0.6], 630.0, [0.4, 0.0])
    _finished_run(tmp_path, runs[3], [0.6, 0.8, 0.7], 690.0, [0.4, -0.1])
    unfinished = compare.Run("2d_cpu64", default, 0)
    results = compare.collect(tmp_path, DATASET, runs + [unfinished])
    assert [r.run for r in results] == runs
    assert results[0].dice == {"RV": 0.7, "MYO": 0.8, "LV": 0.9} and results[1].wall_s == 660.0
    text = compare.tables(results)
    # default: mean Dice 0.8 and 0.7666..., population SD 0.0167; Mime + CE: 0.7 and 0.7, paired differences -0.1
    # and -0.0667
    assert f"| `{default}` | 0,1 | 0.650 ± 0.050 | 0.800 ± 0.000 | 0.900 ± 0.000 | 0.783 ± 0.017 | — |" in text
    assert (
        f"| `{mime}` | 0,1 | 0.650 ± 0.050 | 0.800 ± 0.000 | 0.650 ± 0.050 | 0.700 ± 0.000 "
        "| -0.083 ± 0.017 (-0.100, -0.067) |" in text
    )
    assert f"| 2d_cpu128 | `{mime}` | 1 | 0.600 / 0.800 / 0.700 | 0.700 | 11.5 min |" in text
    compare.plot_curves(results, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
