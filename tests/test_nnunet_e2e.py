"""End-to-end: the real nnU-Net v2 commands find and run a Mime trainer on a tiny generated 2D dataset (CPU).

One test, in order: ``nnUNetv2_plan_and_preprocess`` → ``nnUNetv2_train`` (one short epoch of a test-only subclass
of ``nnUNetTrainerMime``, in a folder of its own composed with ``$(monai-mime nnunet-path)`` in
``nnUNet_extTrainer``) → ``--c`` (one more epoch, a/b from the checkpoint, the statistics cache deleted beforehand
so that recounting would show, and the running averages after loading equal to those saved) → ``--val`` →
``nnUNetv2_predict`` → ``nnUNetv2_evaluate_folder``, and a fold whose training cases lack the rare class fails with
a clear message. The dataset (``monai_mime.synthetic``) has a rare
class absent from most cases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from monai_mime.synthetic import write_nnunet_raw  # noqa: E402
from nnunet_trainers.discovery import ext_folder  # noqa: E402

pytestmark = pytest.mark.slow

DATASET_ID = 992
DATASET = f"Dataset{DATASET_ID}_MimeE2E"
TRAINER = "nnUNetTrainerMimeE2ETest"
NUM_CASES = 10
RARE = 3

TEST_TRAINER = textwrap.dedent(
    '''
    """Test-only: nnUNetTrainerMime with a handful of iterations; epochs from $MIME_E2E_EPOCHS. After a checkpoint is
    loaded, the loss's state is written to $MIME_E2E_LOADED_STATE (if set), for the test to compare."""
    import os

    import torch
    from nnunet_trainers.trainers import nnUNetTrainerMime


    class nnUNetTrainerMimeE2ETest(nnUNetTrainerMime):
        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = int(os.environ.get("MIME_E2E_EPOCHS", "1"))
            self.num_iterations_per_epoch = 3
            self.num_val_iterations_per_epoch = 1
            if self.device.type == "cpu":
                torch.set_num_threads(1)

        def load_checkpoint(self, filename_or_checkpoint):
            super().load_checkpoint(filename_or_checkpoint)
            if os.environ.get("MIME_E2E_LOADED_STATE"):
                torch.save(self.mime_overlap_loss().state_dict(), os.environ["MIME_E2E_LOADED_STATE"])
    '''
)


def _command(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed")
    return found


def _run(args: list[str], env: dict[str, str], check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def _rare_cases(raw: Path) -> set[str]:
    cases = set()
    for path in sorted((raw / "labelsTr").glob("*.nii.gz")):
        image = nib.load(path)
        assert isinstance(image, nib.Nifti1Image)
        if (np.asarray(image.dataobj) == RARE).any():
            cases.add(path.name.removesuffix(".nii.gz"))
    return cases


def test_nnunet_commands_plan_train_continue_validate_predict_evaluate(tmp_path: Path) -> None:
    raw_root, pre_root, res_root = tmp_path / "raw", tmp_path / "preprocessed", tmp_path / "results"
    raw = write_nnunet_raw(raw_root / DATASET, num_cases=NUM_CASES, seed=2, spatial_size=(64, 64), num_val=2)
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (raw / "labelsTr").glob("*.nii.gz"))
    rare = _rare_cases(raw)
    assert 0 < len(rare) < NUM_CASES / 2, f"the rare class should be in a few cases, got {sorted(rare)}"

    env = {
        **os.environ,
        "nnUNet_raw": str(raw_root),
        "nnUNet_preprocessed": str(pre_root),
        "nnUNet_results": str(res_root),
        "nnUNet_def_n_proc": "1",
        "nnUNet_compile": "false",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MONAI_MIME_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("MONAI_MIME_WEIGHT_MODE", None)
    env.pop("MONAI_MIME_WEIGHT_KWARGS", None)
    _run([_command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1"], env)
    preprocessed = pre_root / DATASET
    assert (preprocessed / "nnUNetPlans.json").is_file()

    # fold 0: a rare case in training and one in validation; fold 1: no rare case in training
    val0 = [sorted(rare)[0], sorted(set(cases) - rare)[0]]
    fold1_train = sorted(set(cases) - rare)
    splits = [
        {"train": [c for c in cases if c not in val0], "val": val0},
        {"train": fold1_train, "val": sorted(rare)},
    ]
    (preprocessed / "splits_final.json").write_text(json.dumps(splits))

    # the setup line of the README: nnUNet_extTrainer=$(monai-mime nnunet-path), plus a folder of our own
    path = _run([sys.executable, "-m", "monai_mime", "nnunet-path"], env).stdout.strip()
    assert path == str(ext_folder())
    own = tmp_path / "my_trainers"
    own.mkdir()
    (own / "mime_e2e_test_trainers.py").write_text(TEST_TRAINER)
    env.update(nnUNet_extTrainer=os.pathsep.join([path, str(own)]), nnUNet_n_proc_DA="0", MIME_E2E_EPOCHS="1")

    train = [_command("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu"]
    first = _run(train, env)
    assert f"Using trainer '{TRAINER}' from: {own}" in first.stdout
    output = res_root / DATASET / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"
    checkpoint = torch.load(output / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    entry = checkpoint["monai_mime"]
    assert entry["loss"] == "mime_adaptive" and entry["num_training_cases"] == NUM_CASES - 2 and entry["fold"] == 0
    assert len(entry["a"]) == len(entry["b"]) == 4 and all(x > 0 and np.isfinite(x) for x in entry["a"] + entry["b"])
    saved_state = entry["loss_state"]  # the running averages after the first epoch, not the starting ones
    start = 2 / (torch.tensor(entry["a"][1:]) + torch.tensor(entry["b"][1:])) / float(saved_state["reference_voxels"])
    assert not torch.allclose(saved_state["running_union"], start.float())
    assert "monai-mime: output 1 (" in next(output.glob("training_log_*.txt")).read_text()  # per-output a/b
    assert np.isfinite(checkpoint["logging"]["train_losses"]).all()
    assert (output / "validation" / "summary.json").is_file()
    cache = preprocessed / "monai_mime_stats_nnUNetPlans_2d.json"
    assert cache.is_file()

    # --c: one more epoch; a/b and the running averages come from the checkpoint, nothing is counted again
    cache.unlink()
    env.update(MIME_E2E_EPOCHS="2", MIME_E2E_LOADED_STATE=str(tmp_path / "loaded_state.pt"))
    resumed = _run(train + ["--c"], env)
    assert "a/b restored from the checkpoint" in resumed.stdout and not cache.exists()
    assert "loss state restored from the checkpoint" in resumed.stdout
    loaded = torch.load(tmp_path / "loaded_state.pt", weights_only=True)
    assert set(loaded) == set(saved_state)
    for name, value in saved_state.items():
        assert torch.equal(loaded[name], value), name
    del env["MIME_E2E_LOADED_STATE"]
    checkpoint = torch.load(output / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 2 and checkpoint["monai_mime"]["a"] == entry["a"]
    assert len(checkpoint["logging"]["train_losses"]) == 2

    # --val: validation only, from checkpoint_final, a/b from the checkpoint
    (output / "validation" / "summary.json").unlink()
    validated = _run(train + ["--val"], env)
    assert "a/b restored from the checkpoint" in validated.stdout and not cache.exists()
    summary = json.loads((output / "validation" / "summary.json").read_text())
    assert "foreground_mean" in summary

    # prediction finds the trainer by name (its network builder) and needs no loss
    images_ts, predictions = tmp_path / "imagesTs", tmp_path / "predictions"
    images_ts.mkdir()
    for case in val0:
        shutil.copy(raw / "imagesTr" / f"{case}_0000.nii.gz", images_ts)
    _run(
        [
            _command("nnUNetv2_predict"),
            "-i",
            str(images_ts),
            "-o",
            str(predictions),
            "-d",
            str(DATASET_ID),
            "-c",
            "2d",
            "-f",
            "0",
            "-tr",
            TRAINER,
            "-device",
            "cpu",
            "--disable_tta",
            "-npp",
            "1",
            "-nps",
            "1",
            "--disable_progress_bar",
        ],
        env,
    )
    assert sorted(p.name for p in predictions.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in val0)

    gt = tmp_path / "gt"
    gt.mkdir()
    for case in val0:
        shutil.copy(raw / "labelsTr" / f"{case}.nii.gz", gt)
    _run(
        [
            _command("nnUNetv2_evaluate_folder"),
            str(gt),
            str(predictions),
            "-djfile",
            str(raw / "dataset.json"),
            "-pfile",
            str(output.parent / "plans.json"),
            "-np",
            "1",
        ],
        env,
    )
    evaluation = json.loads((predictions / "summary.json").read_text())
    assert len(evaluation["metric_per_case"]) == len(val0)
    assert set(evaluation["mean"]) == {"1", "2", "3"}

    # a fold whose training cases lack the rare class: a clear error naming the class and the fold
    env["MIME_E2E_EPOCHS"] = "1"
    failed = _run(train[:3] + ["1"] + train[4:], env, check=False)
    assert failed.returncode != 0
    assert "class 3 (rare) does not occur" in failed.stderr + failed.stdout and "fold 1" in failed.stderr
