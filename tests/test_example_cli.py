"""The patch-training example end to end from its command line: every loss, and DDP with two gloo processes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _patch_example import ALL_LOSSES, ENV, EXAMPLES, TINY, finite_results, free_port


# ============================================================================================ end to end
@pytest.mark.slow
def test_cli_end_to_end_all_losses(tmp_path):
    out = tmp_path / "res"
    r = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "train_patches.py"),
            *TINY,
            "--out",
            str(out),
            "--losses",
            ",".join(ALL_LOSSES),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    finite_results(out, ALL_LOSSES, classes=3)
    for name in ALL_LOSSES:
        assert (out / "checkpoints" / f"{name}.pt").exists()
    assert "results.md" in r.stdout


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(EXAMPLES / "train_patches.py"),
            *TINY,
            "--out",
            str(out),
            "--losses",
            "mime,dice",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = finite_results(out, ["mime", "dice"], classes=3)
    assert res["environment"]["world_size"] == 2
    # every held-out case evaluated once, gathered from both processes
    assert [c["case_id"] for c in res["losses"]["dice"]["per_case"]] == [
        "synthetic_012",
        "synthetic_013",
        "synthetic_014",
    ]
    assert r.stdout.count("wrote ") == 1  # only rank 0 writes
