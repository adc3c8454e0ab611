"""Data of the patch-training example: nnU-Net raw folders (2D, 3D, no splits.json) and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from _patch_example import ENV, EXAMPLES, TINY, finite_results, pt, tiny_config, train_patches

from monai_mime.synthetic import write_nnunet_raw


@pytest.mark.slow
def test_nnunet_raw_3d_volumes(tmp_path):
    folder = write_nnunet_raw(
        tmp_path / "Dataset903_S3D",
        num_cases=4,
        seed=1,
        spatial_size=(40, 36, 6),
        spacing=(1.5, 1.5, 5.0),
        num_val=1,
        rare_probability=1.0,
        size_jitter=2,
    )
    cfg = tiny_config(data=str(folder), out=str(tmp_path / "out"), losses=["mime", "dice"])
    data = pt.prepare_data(cfg)
    assert data.slice_axis == 2 and data.spacing_unit == "mm" and data.class_names[3] == "rare"
    assert data.num_train_cases == 3 and len(data.val_cases) == 1
    assert data.val_cases[0].spacing == (1.5, 1.5, 5.0)
    assert len(data.train_items) >= 3 * 4  # 4-8 slices per training volume
    assert all(it["image"].ndim == 3 and it["label"].ndim == 3 for it in data.train_items)
    res = pt.run_experiment(cfg, data=data)
    finite_results(tmp_path / "out", ["mime", "dice"], classes=3)
    # a missed class costs the diagonal of the whole volume in mm
    shape = data.val_cases[0].label.shape
    diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, (1.5, 1.5, 5.0), strict=True)))
    hd = [c["hd95"] for c in res["losses"]["dice"]["per_case"]][0]
    assert all(0.0 <= h <= diag + 1e-6 for h in hd)


@pytest.mark.slow
def test_nnunet_raw_2d_without_splits(tmp_path):
    folder = write_nnunet_raw(tmp_path / "Dataset904_S2D", num_cases=5, seed=0, spatial_size=(48, 48))
    (folder / "splits.json").unlink()
    cfg = tiny_config(data=str(folder), losses=["ce"], val_fraction=0.4, figure=False)
    data = pt.prepare_data(cfg)
    assert len(data.val_cases) == 2 and data.num_train_cases == 3 and len(data.train_items) == 3
    assert data.slice_axis == 2 and data.val_cases[0].label.shape == (48, 48, 1)
    res = pt.run_experiment(cfg, data=data)
    assert math.isfinite(res["losses"]["ce"]["mean"]["dice"])
    # one-slice volumes are scored as 2D images: a missed class costs the 2D diagonal
    assert max(max(c["hd95"]) for c in res["losses"]["ce"]["per_case"]) <= math.hypot(48, 48) + 1e-6


# ============================================================================================ bad input
def _dataset_with_bad_labels(tmp_path: Path) -> Path:
    folder = write_nnunet_raw(
        tmp_path / "Dataset905_Bad", num_cases=3, seed=0, spatial_size=(32, 32), rare_probability=1.0
    )
    meta = json.loads((folder / "dataset.json").read_text())
    del meta["labels"]["rare"]  # the label files still contain 3
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", "does not exist"),
        ("labels", "not declared in dataset.json"),
        ("loss", "unknown loss 'nope'"),
        ("option", "unknown weight mode"),
        ("numtraining", "numTraining"),
        ("nolabels", "labelsTr does not exist"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, case, match):
    args = TINY + ["--out", str(tmp_path / "out")]
    if case == "missing":
        args += ["--data", str(tmp_path / "nowhere")]
    elif case == "labels":
        args += ["--data", str(_dataset_with_bad_labels(tmp_path))]
    elif case == "loss":
        args += ["--losses", "dice,nope"]
    elif case == "option":
        args += ["--losses", "mime:mode=nope"]
    elif case == "numtraining":
        folder = write_nnunet_raw(tmp_path / "D", num_cases=3, spatial_size=(32, 32))
        meta = json.loads((folder / "dataset.json").read_text())
        meta["numTraining"] = 4
        (folder / "dataset.json").write_text(json.dumps(meta))
        args += ["--data", str(folder)]
    elif case == "nolabels":
        (tmp_path / "D" / "imagesTr").mkdir(parents=True)
        (tmp_path / "D" / "dataset.json").write_text(
            json.dumps({"labels": {"background": 0, "a": 1}, "channel_names": {"0": "x"}, "file_ending": ".nii.gz"})
        )
        args += ["--data", str(tmp_path / "D")]
    rc = train_patches.main(args)
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("train_patches.py: error: ") and match in lines[0]
    assert not (tmp_path / "out" / "results.json").exists()


def test_bad_flag_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        train_patches.main(["--epochs", "many"])
    assert exc.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--epochs" in lines[0]


@pytest.mark.slow
def test_cli_bad_input_no_traceback(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "train_patches.py"),
            "--data",
            str(_dataset_with_bad_labels(tmp_path)),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not declared in dataset.json" in lines[0], r.stderr
