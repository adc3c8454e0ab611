"""Shared by the tests of the patch-training example (examples/train_patches.py over examples/patch_training/):
the example on sys.path, a tiny configuration (seconds per loss on a CPU) and the checks of a results folder."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

import ablation  # noqa: E402
import patch_training as pt  # noqa: E402
import train_patches  # noqa: E402

__all__ = [
    "ALL_LOSSES",
    "ablation",
    "ENV",
    "EXAMPLES",
    "TINY",
    "finite_results",
    "free_port",
    "pt",
    "tiny_config",
    "train_patches",
]

torch.set_num_threads(1)
ALL_LOSSES = ["mime", "dice", "vnet", "gdl", "ce"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
# a few iterations of a tiny model on tiny data: seconds per loss on a CPU
TINY = [
    "--epochs",
    "1",
    "--steps-per-epoch",
    "3",
    "--batch-size",
    "2",
    "--patch-size",
    "32",
    "--channels",
    "4,8",
    "--num-train",
    "12",
    "--num-val",
    "3",
    "--threads",
    "1",
    "--device",
    "cpu",
]


def tiny_config(**changes: Any) -> pt.ExperimentConfig:
    """The TINY settings as an :class:`ExperimentConfig` (48² synthetic images, rare class in half of them)."""
    base: dict[str, Any] = dict(
        epochs=1,
        steps_per_epoch=3,
        batch_size=2,
        patch_size=(32, 32),
        channels=(4, 8),
        synthetic_train=12,
        synthetic_val=3,
        synthetic_size=(48, 48),
        synthetic_rare_probability=0.5,
        device="cpu",
        threads=1,
        progress=False,
        out=None,
    )
    base.update(changes)
    return pt.ExperimentConfig(**base)


def finite_results(path: Path, losses: list[str], classes: int) -> dict[str, Any]:
    """Check results.json/.md/.png in ``path``: every loss there, every score finite and in range."""
    res = json.loads((path / "results.json").read_text())
    assert list(res["losses"]) == losses
    for name, e in res["losses"].items():
        assert len(e["per_class"]) == classes, name
        for cls, v in e["per_class"].items():
            for key in ("dice_mean", "dice_std", "hd95_mean", "hd95_std"):
                assert isinstance(v[key], float) and math.isfinite(v[key]), (name, cls, key, v[key])
            assert 0.0 <= v["dice_mean"] <= 1.0
        assert math.isfinite(e["mean"]["dice"]) and math.isfinite(e["mean"]["hd95"])
        assert e["train_time_s"] > 0 and e["steps"] >= 1
        assert e["loss_per_epoch"] and all(math.isfinite(x) for x in e["loss_per_epoch"])
        assert e["loss_curve"] and all(math.isfinite(x[1]) for x in e["loss_curve"])
    md = (path / "results.md").read_text()
    for name in losses:
        assert f"| {name} |" in md
    assert "nan" not in md.lower()
    png = path / "results.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
