"""Ablation runs, one folder each: the folder's name, and the scores the summaries read from its results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_scores", "mean_std", "run_name", "run_scores"]


def run_name(steps: int, seed: int, setting: str, patch: int | None = None) -> str:
    """``[patch<p>/]steps<steps>_seed<seed>/<setting>`` with characters unsafe in file names replaced."""
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in setting)
    return ("" if patch is None else f"patch{patch}/") + f"steps{steps}_seed{seed}/{safe}"


def run_scores(entry: dict[str, Any]) -> dict[str, Any]:
    """One loss's scores from its results.json entry: mean and per-class Dice and HD95 (paper conventions), the
    per-class Dice over the held-out cases that contain the class and its mean over the classes (``dice_present``),
    the predicted/true volume ratio, Mime's threshold and the training time."""
    per_class = entry["per_class"]
    cases = entry["per_case"]
    present = [[case["dice"][k] for case in cases if case["gt_counts"][k] > 0] for k in range(len(per_class))]
    class_dice_present = [float(np.mean(d)) if d else None for d in present]
    scored = [v for v in class_dice_present if v is not None]
    return {
        "dice": entry["mean"]["dice"],
        "dice_present": float(np.mean(scored)) if scored else None,
        "hd95": entry["mean"]["hd95"],
        "class_dice": [v["dice_mean"] for v in per_class.values()],
        "class_dice_present": class_dice_present,
        "class_hd95": [v["hd95_mean"] for v in per_class.values()],
        "volume_ratio": [v["volume_ratio"] for v in per_class.values()],
        "threshold": entry.get("threshold"),
        "train_time_s": entry.get("train_time_s"),
    }


def load_scores(folder: Path) -> tuple[list[str], dict[str, Any]] | None:
    """(foreground class names, :func:`run_scores`) of the finished run in ``folder``, or None if unfinished."""
    path = folder / "results.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result["data"]["classes"][1:], run_scores(next(iter(result["losses"].values())))


def mean_std(values: list[float | None]) -> tuple[float, float]:
    """Mean and standard deviation of the values that are not None (NaN, NaN when none is)."""
    finite = np.array([v for v in values if v is not None], dtype=float)
    if not finite.size:
        return float("nan"), float("nan")
    with np.errstate(invalid="ignore"):  # infinite volume ratios (a class predicted where absent): std NaN
        return float(finite.mean()), float(finite.std())
