"""Same command and seed, same numbers: the patch-training example run twice from its command line gives identical
results.json (every metric, loss value and Mime weight; only timings and the output path may differ)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _patch_example import ENV, EXAMPLES, TINY

TIMINGS = ("train_time_s", "eval_time_s", "checkpoint")


def _without_timings(results: dict[str, Any]) -> dict[str, Any]:
    for entry in results["losses"].values():
        for key in TIMINGS:
            entry.pop(key)
        for summary in entry.get("intermediate", {}).values():
            summary.pop("eval_time_s")
    results["config"].pop("out")
    return results


def _run(out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(EXAMPLES / "train_patches.py"), *TINY, "--epochs", "2", "--eval-epochs", "1"]
    cmd += ["--losses", "mime_adaptive,dice", "--no-figure", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_two_runs_give_identical_results(tmp_path):
    first, second = _run(tmp_path / "first"), _run(tmp_path / "second")
    assert first["losses"]["mime_adaptive"]["steps"] == 6
    assert "1" in first["losses"]["dice"]["intermediate"]  # the intermediate evaluation is compared too
    assert _without_timings(first) == _without_timings(second)
