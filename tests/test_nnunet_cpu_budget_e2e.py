"""End-to-end on the CPU: the CPU configuration and a seeded budget trainer through nnU-Net's own commands.

``nnUNetv2_plan_and_preprocess -c 2d`` on a tiny generated dataset → ``monai-mime nnunet-cpu-plans`` (writes
``2d_cpu128`` / ``2d_cpu64`` into the plans) → ``nnUNetv2_train ... 2d_cpu64`` with a two-epoch subclass of
``nnUNetTrainer_CPUBudget`` (nnU-Net's own loss), which trains and runs nnU-Net's final validation; two runs with
``MONAI_MIME_SEED=0`` log identical training losses, a run with seed 1 other ones. Then
``examples/nnunet/gradient_scale.py`` on the same plans: every trainer starts from the same network and sees the same
batches, so the cross-entropy term's gradient is the same for nnU-Net's Dice + CE and for Mime + CE.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("nnunetv2")

from test_nnunet_e2e import _command, _run  # noqa: E402

from monai_mime.synthetic import write_nnunet_raw  # noqa: E402
from nnunet_trainers.discovery import ext_folder  # noqa: E402

pytestmark = pytest.mark.slow

DATASET_ID = 993
DATASET = f"Dataset{DATASET_ID}_MimeCPUBudget"
TRAINER = "nnUNetTrainer_CPUBudgetE2ETest"
CONFIGURATION = "2d_cpu64"

TEST_TRAINER = textwrap.dedent(
    '''
    """Test-only: nnU-Net's default trainer on a two-epoch CPU budget of three iterations."""
    from nnunet_trainers.budget import nnUNetTrainer_CPUBudget


    class nnUNetTrainer_CPUBudgetE2ETest(nnUNetTrainer_CPUBudget):
        budget_epochs = 2
        budget_iterations = 3
        budget_val_iterations = 1
    '''
)


def _train(env: dict[str, str], results: Path, seed: int) -> list[float]:
    """One ``nnUNetv2_train`` run into ``results``; its training losses per epoch from the final checkpoint."""
    run_env = {**env, "nnUNet_results": str(results), "MONAI_MIME_SEED": str(seed)}
    train = [_command("nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, "0", "-tr", TRAINER, "-device", "cpu"]
    result = _run(train, run_env)
    assert f"monai-mime: seed {seed} (torch, numpy, random)" in result.stdout
    output = results / DATASET / f"{TRAINER}__nnUNetPlans__{CONFIGURATION}" / "fold_0"
    checkpoint = torch.load(output / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 2 and checkpoint["inference_allowed_mirroring_axes"] is None
    summary = json.loads((output / "validation" / "summary.json").read_text())  # nnU-Net's final validation
    assert set(summary["mean"]) == {"1", "2", "3"} and 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0
    return [float(x) for x in checkpoint["logging"]["train_losses"]]


def test_cpu_configuration_and_seeded_budget_trainer(tmp_path: Path) -> None:
    raw_root, pre_root = tmp_path / "raw", tmp_path / "preprocessed"
    write_nnunet_raw(raw_root / DATASET, num_cases=8, seed=3, spatial_size=(64, 64), num_val=2)
    env = {
        **os.environ,
        "nnUNet_raw": str(raw_root),
        "nnUNet_preprocessed": str(pre_root),
        "nnUNet_results": str(tmp_path / "results"),
        "nnUNet_def_n_proc": "1",
        "nnUNet_compile": "false",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MONAI_MIME_CACHE_DIR": str(tmp_path / "cache"),
    }
    _run([_command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1"], env)
    plans_file = pre_root / DATASET / "nnUNetPlans.json"
    planned = json.loads(plans_file.read_text())

    # the documented command, by dataset id under $nnUNet_preprocessed
    written = _run([sys.executable, "-m", "monai_mime", "nnunet-cpu-plans", str(DATASET_ID)], env).stdout
    assert "2d_cpu128: added" in written and "2d_cpu64: added" in written
    plans = json.loads(plans_file.read_text())
    assert {k: v for k, v in plans["configurations"].items() if not k.startswith("2d_cpu")} == planned["configurations"]
    assert plans["configurations"][CONFIGURATION]["inherits_from"] == "2d"

    own = tmp_path / "my_trainers"
    own.mkdir()
    (own / "monai_mime_budget_e2e_test_trainers.py").write_text(TEST_TRAINER)
    env.update(nnUNet_extTrainer=os.pathsep.join([str(ext_folder()), str(own)]), nnUNet_n_proc_DA="0")

    first = _train(env, tmp_path / "results_a", seed=0)
    assert len(first) == 2 and all(abs(x) < 10 for x in first)
    assert _train(env, tmp_path / "results_b", seed=0) == first
    other = _train(env, tmp_path / "results_c", seed=1)
    assert other[0] != first[0]

    script = Path(__file__).resolve().parents[1] / "examples" / "nnunet" / "gradient_scale.py"
    trainers = ["nnUNetTrainer_CPUBudget", "nnUNetTrainerMimeCE_CPUBudget", "nnUNetTrainerMime_CPUBudget"]
    command = [sys.executable, str(script), "--dataset", str(DATASET_ID), "--configuration", CONFIGURATION]
    printed = _run([*command, "--batches", "2", "--trainers", *trainers], env).stdout
    rows = {line.split("`")[1]: line.split("|")[2:7] for line in printed.splitlines() if line.startswith("| `")}
    default, mime_ce, mime = ([float(x) for x in rows[t]] for t in trainers)  # loss, total, overlap, CE, ratio
    assert default[3] == pytest.approx(mime_ce[3], rel=1e-3) and default[3] > 0  # same network, same batches
    assert mime[3] == 0 and mime[1] == mime[2] == pytest.approx(mime_ce[2], rel=1e-3)
    assert default[4] == 1 and mime_ce[4] == pytest.approx(mime_ce[1] / default[1], rel=2e-3)
