"""The ``monai-mime`` command line, called in-process (``main([...])``) and as ``python -m monai_mime``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from monai_mime.cli import main
from monai_mime.stats import ClassStatistics


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_MIME_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def folder(tmp_path):
    """Three 4x4x4 label images: class counts (181, 6, 4, 1), presence (3, 2, 1, 1)."""
    (tmp_path / "labels").mkdir()
    arrays = [np.zeros((4, 4, 4), np.uint8) for _ in range(3)]
    arrays[0][0, 0, :2] = 1
    arrays[1][1, 1] = 2
    arrays[2][2, 0, 0] = 3
    arrays[2][3, 3] = 1
    for i, a in enumerate(arrays):
        nib.save(nib.Nifti1Image(a, np.eye(4)), str(tmp_path / "labels" / f"img{i}.nii.gz"))
    return tmp_path / "labels"


def run_module(*args, env_dir=None):
    env = {"MONAI_MIME_CACHE_DIR": str(env_dir)} if env_dir else {}
    return subprocess.run(
        [sys.executable, "-m", "monai_mime", *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ, **env),
        timeout=300,
    )


def test_stats_prints_table_and_writes_json(folder, tmp_path, capsys):
    out = tmp_path / "out" / "stats.json"
    assert main(["stats", str(folder), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    for k, count, presence in ((0, 181, 3), (1, 6, 2), (2, 4, 1), (3, 1, 1)):
        assert re.search(rf"^\s+{k}\s+{k}\s+{count}\s+[0-9.]+\s+{presence}/3\s", text, re.M), text
    assert "b/(a+b)" in text and f"wrote {out}" in text
    doc = json.loads(out.read_text())
    s = ClassStatistics.load(out)
    np.testing.assert_array_equal(s.total_counts, [181, 6, 4, 1])
    a, b = s.weights("balance", gamma=0.5)
    np.testing.assert_allclose(doc["weights"]["a"], a)
    np.testing.assert_allclose(doc["weights"]["threshold"], b / (a + b))
    assert doc["weights"]["mode"] == "balance"


def test_stats_modes_and_saved_file_as_input(folder, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert (
        main(
            [
                "stats",
                str(folder),
                "-q",
                "--mode",
                "dice",
                "--overlap",
                "0.8",
                "--patch-size",
                "2",
                "2",
                "4",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    np.testing.assert_allclose(doc["weights"]["threshold"], [0.4] * 4)
    assert doc["weights"]["patch_size"] == [2, 2, 4] and doc["weights"]["overlap"] == 0.8
    capsys.readouterr()
    assert main(["stats", str(out), "--mode", "balance", "--gamma", "0"]) == 0
    text = capsys.readouterr().out
    assert "loaded from" in text and "mode=balance (gamma=0.0)" in text
    assert re.search(r" 0\.5 +[0-9.]+% +[0-9.]+%\n", text), text  # threshold, then the saved empty shares


@pytest.mark.parametrize(
    "args,message",
    [
        (["stats", "{tmp}/missing"], "missing: no such file or folder"),
        (["stats", "{folder}/img0.nii.gz"], "img0.nii.gz: not a folder or a statistics .json file"),
        (["stats", "{folder}", "--fold", "0"], "--fold: only for an nnU-Net preprocessed dataset"),
        (["stats", "{folder}", "--num-classes", "2"], "img1.nii.gz: label values 2 outside [0, 2)"),
        (["stats", "{folder}", "--num-classes", "5"], "class 4 (4) never occurs in the 3 images"),
        (["stats", "{folder}", "--overlap", "0.5"], "weight mode 'balance' takes ['gamma'], not ['overlap']"),
        (
            ["stats", "{folder}", "--mode", "mean", "--gamma", "0.5"],
            "weight mode 'mean' takes no parameters, not ['gamma']",
        ),
        (["stats", "{folder}", "--mode", "dice", "--overlap", "2"], "overlap must lie in (0, 1]"),
        (["stats", "{tmp}/bad.json"], "bad.json: not valid JSON"),
    ],
)
def test_errors_are_one_line_exit_2(folder, tmp_path, capsys, args, message):
    (tmp_path / "bad.json").write_text("{")
    args = [a.format(tmp=tmp_path, folder=folder) for a in args]
    assert main(args + ["-q"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("monai-mime stats: error: ")
    assert message in captured.err and "Traceback" not in captured.err


def test_absent_class_opt_in(folder, capsys):
    assert main(["stats", str(folder), "--num-classes", "5", "--absent", "one_voxel", "-q"]) == 0
    assert "0/3" in capsys.readouterr().out


def test_argparse_errors_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["stats", "x", "--mode", "nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'nope'" in err
    for argv in (["--help"], ["stats", "--help"], ["nnunet-path", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    helped = capsys.readouterr().out
    assert "nnUNet_extTrainer" in helped and "--num-classes" in helped and "nnunet-path" in helped
    assert main([]) == 2


def test_nnunet_raw_dataset_is_detected(tmp_path, capsys):
    root = tmp_path / "Dataset005_Raw"
    (root / "labelsTr").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.array([[[0, 1, 2, 2]]], np.uint8), np.eye(4)), str(root / "labelsTr" / "a.nii.gz"))
    (root / "dataset.json").write_text(
        json.dumps(
            {"labels": {"background": 0, "RV": 1, "LV": 2}, "file_ending": ".nii.gz", "channel_names": {"0": "MRI"}}
        )
    )
    assert main(["stats", str(root), "-q", "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "nnunet_raw:" in text and re.search(r"^\s+2\s+LV\s+2\s+0\.50*\s+1/1\s", text, re.M), text
    assert not (tmp_path / "cache").exists()


def test_nnunet_path(capsys):
    discovery = pytest.importorskip("nnunet_trainers.discovery")
    assert main(["nnunet-path"]) == 0
    assert capsys.readouterr().out.strip() == str(discovery.ext_folder())
    assert main(["nnunet-path", "--export"]) == 0
    assert capsys.readouterr().out.startswith("export nnUNet_extTrainer=")


@pytest.mark.slow
def test_python_dash_m(folder, tmp_path):
    ok = run_module("stats", folder, "--quiet", "--out", tmp_path / "m.json", env_dir=tmp_path / "c")
    assert ok.returncode == 0, ok.stderr
    assert "181" in ok.stdout and (tmp_path / "m.json").is_file()
    bad = run_module("stats", tmp_path / "nope", env_dir=tmp_path / "c")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert "no such file or folder" in bad.stderr
